"""Success judges: what decides that an episode on a device reached its goal.

In the simulated phone the simulator's exact test decides (:func:`~digiq_trl.envs.tasks.is_success`).
A real device knows nothing of goals, so, as in the Digi-Q and DigiRL evaluations, a
vision-language model looks at the last screens and the goal and answers success or failure. Two
backends share one prompt (:func:`judge_messages`) and one parser (:func:`parse_verdict`):

- :class:`LocalVLMJudge`: a VLM by Hub id or folder, run here through transformers;
- :class:`EndpointJudge`: any OpenAI-compatible chat endpoint (a vLLM server, a hosted API).

The prompt follows the reference evaluator's few-shot structure, in our own words: worked examples
that each state what the screen would show if the task were done, what it does show, and a
``Status:`` line; then the episode's task and screens. A judge never raises over an answer: a
timeout, a failed request or an answer with no verdict is a :class:`Verdict` with ``error`` set,
and never a success.

Example:
    >>> from digiq_trl.judges import parse_verdict
    >>> parse_verdict("Expected: the Settings app open.\\nSeen: the home screen.\\nStatus: failure").success
    False
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on the current screen: ``success``, the judge's ``reasoning`` (its whole
    answer), and ``error`` when no decision could be had (then ``success`` is False)."""

    success: bool
    reasoning: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict (stored with the episode)."""
        return dataclasses.asdict(self)


class Judge(Protocol):
    """Anything that decides from a goal and the last screens (oldest first) whether the goal is reached."""

    def __call__(self, goal: str, screens: Sequence[Image.Image]) -> Verdict:
        """The verdict on the last of ``screens``."""
        ...


INSTRUCTIONS = (
    "You check whether a phone agent has completed its task. You get the task and the phone's last "
    "screens, oldest first; the last one is the screen now, and only it decides. First say what the "
    "screen would show if the task were done, then what the last screen does show, then end with a "
    "line that is exactly 'Status: success' or 'Status: failure'. A screen that only leads towards "
    "the goal, or that a dialog or banner covers, is a failure."
)
"""What the judge is asked, before the worked examples."""

EXAMPLES = (
    ("What's the weather like in Lisbon?",
     "Chrome, with search results for 'weather Lisbon' topped by a forecast card.",
     "search results for the weather in Lisbon, such as a forecast",
     "Chrome shows results for 'weather Lisbon' with today's forecast at the top", "success"),
    ("Open the Clock app",
     "the home screen, with the Clock icon in the second row.",
     "the Clock app open, with its alarms or world clock",
     "the home screen; the Clock app has not been opened", "failure"),
    ("Go to walmart.com, search for 'desk lamp', and select the first entry",
     "walmart.com's results for 'desk lamp', a list of lamps.",
     "the product page of the first result for 'desk lamp' on walmart.com",
     "the list of results; no product has been opened yet", "failure"),
    ("What's the latest news in Kenya?",
     "a news site whose page is covered by a cookie consent dialog.",
     "news articles about Kenya that can be read",
     "a news site, but a consent dialog hides the articles", "failure"),
    ("Turn off notifications for the Maps app",
     "the Maps app's notification settings, the switch grey and off.",
     "the Maps notification switch set to off",
     "the Maps notification settings with the switch off", "success"),
)
"""Worked examples ``(task, the screen, expected, seen, status)``, described in words (no images)."""


def _examples_text() -> str:
    blocks = [
        f"Example {i}\nTask: {task}\nScreen now: {screen}\nExpected: If the task were done, the screen would show "
        f"{expected}.\nSeen: The screen shows {seen}.\nStatus: {status}"
        for i, (task, screen, expected, seen, status) in enumerate(EXAMPLES, start=1)
    ]
    return "\n\n".join(blocks)


def judge_messages(goal: str, num_screens: int) -> list[dict[str, Any]]:
    """The judge's chat: one user turn with the instructions, the worked examples, the task and
    ``num_screens`` image placeholders (``{"type": "image"}``, TRL's conversational vision format)."""
    head = f"{INSTRUCTIONS}\n\n{_examples_text()}\n\nYour turn\nTask: {goal}\nScreens, oldest first:"
    tail = "Answer in the examples' form: an 'Expected:' line, a 'Seen:' line and the 'Status:' line."
    content = [{"type": "text", "text": head}, *({"type": "image"} for _ in range(num_screens)),
               {"type": "text", "text": tail}]
    return [{"role": "user", "content": content}]


_STATUS = re.compile(r"status\s*:\s*\**\s*(success|failure)\b", re.IGNORECASE)


def parse_verdict(answer: str) -> Verdict:
    """The verdict in a judge's answer: its last ``Status: success`` / ``Status: failure`` line.

    An answer with no such line is an error (``unparsable answer``), not a success.

    Example:
        >>> parse_verdict("Seen: results for 'weather Lisbon'.\\nStatus: Success")
        Verdict(success=True, reasoning="Seen: results for 'weather Lisbon'.\\nStatus: Success", error='')
    """
    found = _STATUS.findall(answer)
    if not found:
        return Verdict(False, answer, "unparsable answer: no 'Status: success' or 'Status: failure' line")
    return Verdict(found[-1].lower() == "success", answer)


class LocalVLMJudge:
    """A VLM loaded here through transformers judges (greedy decoding).

    Args:
        model: a Hub id, a folder, or a model shipped with digiq-trl
            (:func:`~digiq_trl.models.pretrained.resolve_pretrained`); any
            ``AutoModelForImageTextToText`` whose processor has a chat template.
        max_new_tokens: answer length limit.
    """

    def __init__(self, model: str, max_new_tokens: int = 256) -> None:
        from .models.loading import load_vlm
        from .models.processing import load_processor

        self.name = model
        self.model = load_vlm(model).eval()
        self.processor = load_processor(model)
        self.max_new_tokens = max_new_tokens

    def __call__(self, goal: str, screens: Sequence[Image.Image]) -> Verdict:
        """Ask the model and parse its answer."""
        import torch

        prompt = self.processor.apply_chat_template(judge_messages(goal, len(screens)), tokenize=False,
                                                    add_generation_prompt=True)
        inputs = self.processor(images=list(screens), text=[prompt], return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.processor.tokenizer.pad_token_id)
        answer = self.processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return parse_verdict(answer.strip())


class EndpointJudge:
    """A model behind an OpenAI-compatible chat endpoint judges (``POST {base_url}/chat/completions``).

    The request is plain HTTP from the standard library: ``huggingface_hub``'s client refuses every
    request, to any host, while ``HF_HUB_OFFLINE`` is set, which is how a cluster that serves its
    own judge with vLLM often runs.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` for ``vllm serve``.
        model: the served model's name.
        api_key: sent as a bearer token when given.
        timeout_s: most seconds one request may take; past it the verdict is an error.
        max_tokens: answer length limit.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 max_tokens: int = 512) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = model
        self.api_key, self.timeout_s, self.max_tokens = api_key, timeout_s, max_tokens

    def __call__(self, goal: str, screens: Sequence[Image.Image]) -> Verdict:
        """Send the chat with the screens as PNG data URLs and parse the answer."""
        messages = judge_messages(goal, len(screens))
        images = iter(screens)
        for message in messages:
            message["content"] = [
                {"type": "image_url", "image_url": {"url": _data_url(next(images))}} if part["type"] == "image" else part
                for part in message["content"]
            ]
        body = {"model": self.name, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.load(response)["choices"][0]["message"]["content"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:  # URLError and timeouts are OSErrors
            return Verdict(False, "", f"endpoint {self.url}: {_describe(error)}")
        if not isinstance(answer, str):
            return Verdict(False, "", f"endpoint {self.url}: the answer has no text content ({answer!r})")
        return parse_verdict(answer.strip())


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _describe(error: Exception) -> str:
    """One line for a failed request: the HTTP status, the timeout, or the error itself."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, Exception) else error
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"
