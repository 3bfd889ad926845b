"""The page of `segfast serve`: image and query in; overlay, answer, the conversation so far and
the mask files out.

Like the authors' demos (LISA's app.py: an image, a text instruction, the segmentation output and
the text output), with what they leave out: a conversation that goes on (SegLLM remembers the
earlier rounds and their masks until Clear or a new image; other systems answer each query on its
own, and the page says which), and the masks to download as the PNGs and RLE JSON that
`segfast predict` writes (Prediction.save). The page works on any predictor-like object:
`.system` (a name), `.predict(image, query, classes=, support=)` and `.chat()` -> a conversation
with `.ask(image, query)`, `.reset()` and `.rounds` (rounds remembered); a prediction has `.text`,
`.labels`, `.overlay()` and `.save(out_dir, stem)`.

LaSagnA's page adds a class list (#classes), LLaFS's a support image and its mask (#support,
#support_mask); with them a question is a single prediction (Predictor.predict), not a round.

Element ids (what a browser test drives): #image, #query, #go, #clear, #overlay, #answer, #masks,
#history, #status.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

KEEP_SECONDS = 3600  # how long a round's files stay downloadable (ours, and Gradio's copies of them)


def require_gradio():
    """gradio, imported with its usage analytics off unless GRADIO_ANALYTICS_ENABLED says otherwise."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as exc:
        raise ImportError("segfast serve needs gradio: pip install 'segfast[serve]'") from exc
    return gradio


class Page:
    """The page's handlers over one predictor, kept apart from the layout so that tests call them
    without a browser. Each returns the outputs (overlay, answer, mask files, conversation,
    history, status)."""

    def __init__(self, predictor, files_dir=None):
        self.predictor = predictor
        # Gradio copies returned files into its own cache; ours live under the system temp
        # folder, which Gradio serves from without an allowed_paths entry.
        self.files_dir = Path(files_dir or tempfile.mkdtemp(prefix="segfast-serve-"))

    def ask(self, image, query, conversation, history, classes=None, support_image=None, support_mask=None):
        """One question. classes (LaSagnA: comma-separated names) or a support image with its mask
        (LLaFS) make it a single prediction with them; otherwise it is the conversation's next round."""
        gr = require_gradio()
        if image is None:
            raise gr.Error("image: upload an image first")
        self.sweep()
        query, extra = (query or "").strip(), {}
        if classes and classes.strip():
            extra["classes"] = [c.strip() for c in classes.split(",") if c.strip()]
        if support_image is not None or support_mask is not None:
            if support_image is None or support_mask is None:
                raise gr.Error("support: give both the support image and its mask")
            extra["support"] = [(support_image, support_mask)]
        if not query and "support" not in extra:  # LLaFS may go without a class name
            raise gr.Error("query: type what to segment")
        conversation = conversation or self.predictor.chat()
        before = conversation.rounds
        try:
            if extra:
                prediction = self.predictor.predict(image, query, **extra)
            else:
                prediction = conversation.ask(image, query)
        except (ValueError, FileNotFoundError) as exc:  # what the predictor refuses, said on the page
            raise gr.Error(str(exc)) from exc
        if history and conversation.rounds <= before:  # the model did not carry the earlier rounds over
            history = []
        history = [*(history or []), {"role": "user", "content": query}]
        history.append({"role": "assistant", "content": prediction.text})
        files = prediction.save(Path(tempfile.mkdtemp(dir=self.files_dir)), f"round{len(history) // 2}")
        paths = [str(p) for p in files["masks"]] + [str(files["json"])]
        status = self.status(conversation, prediction.labels)
        return prediction.overlay(), prediction.text, paths, conversation, history, status

    def sweep(self) -> None:
        """Removes rounds' files older than KEEP_SECONDS, so that a page left running does not fill
        the disk (Prediction.save writes an overlay PNG of the full image each round)."""
        cutoff = time.time() - KEEP_SECONDS
        for folder in self.files_dir.iterdir():
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def clear(self, conversation):
        """Forgets the rounds (Clear, or a new image)."""
        if conversation is not None:
            conversation.reset()
        return None, "", None, conversation, [], self.status(conversation)

    def status(self, conversation, labels=None) -> str:
        system = self.predictor.system
        remembered = 0 if conversation is None else conversation.rounds
        if remembered:
            said = f"{system} remembers {remembered} round(s) about this image; Clear or a new image forgets them."
        else:
            said = f"{system}: each query is answered on its own (no round remembered)."
        if labels:  # LaSagnA names each mask's class
            said += " Masks: " + ", ".join(f"{i}: {name}" for i, name in enumerate(labels)) + "."
        return said


def build_app(predictor, title: str | None = None, files_dir=None):
    """The gr.Blocks page over `predictor` (see the module docstring for what it must offer)."""
    gr = require_gradio()
    page = Page(predictor, files_dir)
    title = title or f"segfast: {predictor.system}"
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as app:
        gr.Markdown(f"## {title}\nUpload an image, type a query and press Segment; ask again to go on.")
        conversation = gr.State(None)  # per browser session; made by the first question
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", image_mode="RGB", label="Image", elem_id="image")
                query = gr.Textbox(label="Query", placeholder="Please segment the ...", elem_id="query")
                # the system's own inputs (segfast.load's predict): LaSagnA's classes, LLaFS's support
                classes = gr.Textbox(
                    label="Classes (comma-separated; each one present gets a mask)",
                    visible=predictor.system == "lasagna",
                    elem_id="classes",
                )
                with gr.Row():
                    llafs = predictor.system == "llafs"
                    support_image = gr.Image(
                        type="pil", image_mode="RGB", label="Support image", visible=llafs, elem_id="support"
                    )
                    support_mask = gr.Image(
                        type="numpy", image_mode="L", label="Its mask", visible=llafs, elem_id="support_mask"
                    )
                with gr.Row():
                    go = gr.Button("Segment", variant="primary", elem_id="go")
                    clear = gr.Button("Clear", elem_id="clear")
                history = gr.Chatbot(label="Conversation", elem_id="history")
            with gr.Column():
                overlay = gr.Image(type="pil", format="png", label="Overlay", interactive=False, elem_id="overlay")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                masks = gr.File(
                    label="Masks (PNG, 0/255, one per target) and RLE (JSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="masks",
                )
                status = gr.Markdown(page.status(None), elem_id="status")
        outputs = [overlay, answer, masks, conversation, history, status]
        # one model, one call at a time: every event that touches it queues under one id
        for event in (go.click, query.submit):
            inputs = [image, query, conversation, history, classes, support_image, support_mask]
            event(page.ask, inputs, outputs, concurrency_id="model")
        for event in (clear.click, image.upload, image.clear, history.clear):  # history.clear: its bin
            event(page.clear, [conversation], outputs, concurrency_id="model")
    return app


def launch(predictor, host: str = "127.0.0.1", port: int = 7860, title: str | None = None, block: bool = True):
    """Serves the page on host:port (no public share link); block=False returns the running app
    (app.close() stops it)."""
    app = build_app(predictor, title)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, prevent_thread_lock=not block
    )
    return app
