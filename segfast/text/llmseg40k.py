"""The text of LLM-Seg40K's generation pipeline (LLM-Seg §4.2.2): the image-description prompt,
the question-generation template of its Fig. 4 (word for word, the example included), and the
parser of the answers it asks for ("N. [Q]: question [A]: category")."""

import re

DESCRIBE = "Please describe the content in this image within 10 sentences."

TEMPLATE = """I want you to act as an image data annotator. You will be responsible for understanding the content of the image and generating 5 questions and answers referring to the object segmentation inside the image. Since you cannot see the image. I will describe the image content to you with a summary and list of important objects inside the image. Be careful, your generated questions should fulfil the following requirements:

1. The questions should be short and concise, highly related to the image.
2. The answer to each question must be one of the important objects I provided to you.
3. Some important objects may not exist in the description, but they do exist in the image. You can also generate questions for those objects.
4. The question should not contain the name or the location of the object.
5. The question should be based on the property or function of the object.
6. The description of question should be related to the image content, not a general one.
7. You should not generate more than 2 different questions for the same answer.

Here is one example:

[Summary]:

In the image, there are two men standing next to their motorcycles, which are parked on the side of a road. The motorcycles are a black and silver one and a blue one. The men are wearing helmets, and they are standing close to each other.

[Important Objects]:

backpack | helmet | boot | saddlebag | mailbox | ashcan | stop_sign | motorcycle

[Questions]:

1. [Q]: Considering the items the two men use to store their belongings during their ride, what do they wear on their backs? [A]: helmet
2. [Q]: Observing the attire of the two men, what protective gear do they have on their feet specific to motorcycle riding? [A]: boot
3. [Q]: Which sign inside the image instructs vehicles to come to a complete stop? [A]: stop_sign
4. [Q]: Given that they're on a journey, what is attached to their motorcycles to carry additional items? [A]: saddlebag
5. [Q]: Observing this image, where do people discard waste on the street? [A]: ashcan.

Now please generate questions based on the the following summary and important objects.

[Summary]:

<summary>

[Important Objects]:

<important_objects>

[Questions]:
"""  # noqa: E501 - the paper's template, line for line

MAX_PER_ANSWER = 2  # the template's rule 7
_PAIR = re.compile(r"\[Q\]:\s*(?P<q>.+?)\s*\[A\]:\s*(?P<a>[^\n[]+)", re.S)


def question_prompt(summary: str, objects: list) -> str:
    """Fig. 4 with <summary> and <important_objects> (category names joined by " | ") filled in."""
    return TEMPLATE.replace("<summary>", summary.strip()).replace("<important_objects>", " | ".join(objects))


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "_", name.strip().strip(".").strip().lower())


def parse_questions(text: str, objects: list) -> tuple[list, list]:
    """([{"question", "answer"}] kept, [(question, answer, why)] dropped) of an LLM's answer to
    the template: answers must name one of `objects` (rule 2; case, spaces and underscores and a
    final full stop do not matter), at most MAX_PER_ANSWER questions per answer (rule 7), and
    the question must not be empty."""
    known = {_norm(o): o for o in objects}
    kept, dropped, per = [], [], {}
    for match in _PAIR.finditer(text):
        question, answer = " ".join(match["q"].split()), match["a"].strip()
        name = known.get(_norm(answer))
        if not question:
            dropped.append((question, answer, "empty question"))
        elif name is None:
            dropped.append((question, answer, "answer is not one of the important objects"))
        elif per.get(name, 0) >= MAX_PER_ANSWER:
            dropped.append((question, answer, f"more than {MAX_PER_ANSWER} questions for this answer"))
        else:
            per[name] = per.get(name, 0) + 1
            kept.append({"question": question, "answer": name})
    return kept, dropped
