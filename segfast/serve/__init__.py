"""`segfast serve --checkpoint DIR`: an interactive page (Gradio, as the authors' demos are) to
upload an image, type a query, see the overlay and the answer, go on with a conversation and
download the masks. app.py builds the page from a loaded predictor; the CLI wires it to a
checkpoint. It sits above jobs and inference, below cli; gradio is the `serve` extra."""

from segfast.serve.app import build_app, launch, require_gradio

__all__ = ["build_app", "launch", "require_gradio"]
