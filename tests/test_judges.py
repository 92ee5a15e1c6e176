"""Success judges: the few-shot prompt, the verdict parser, a tiny local VLM, an OpenAI-compatible
endpoint stand-in on loopback, and judge errors recorded per episode, never counted as success."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from digiq_trl.judges import EXAMPLES, EndpointJudge, LocalVLMJudge, Verdict, judge_messages, parse_verdict


SCREENS = [Image.new("RGB", (112, 224), "white"), Image.new("RGB", (112, 224), "navy")]
SUCCESS = "Expected: the Clock app open.\nSeen: the Clock app shows its alarms.\nStatus: success"


@pytest.mark.parametrize(("answer", "success"), [
    (SUCCESS, True),
    ("Expected: results.\nSeen: the home screen.\nStatus: failure", False),
    ("status:SUCCESS", True),
    ("**Status:** success", True),
    ("Example 1 ... Status: success\nMy answer ... Status: failure", False),  # the last verdict counts
])
def test_parse_verdict(answer: str, success: bool) -> None:
    assert parse_verdict(answer) == Verdict(success, answer)


@pytest.mark.parametrize("answer", ["", "yes", "Status: successful", "The task is done.", "Status: maybe"])
def test_an_answer_without_a_verdict_is_an_error_not_a_success(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert not verdict.success and verdict.error.startswith("unparsable answer") and verdict.reasoning == answer


def test_the_prompt_has_worked_examples_then_the_task_and_its_screens() -> None:
    (message,) = judge_messages("Open the calculator", 2)
    parts = message["content"]
    assert message["role"] == "user" and [p["type"] for p in parts] == ["text", "image", "image", "text"]
    head = parts[0]["text"]
    assert head.count("\nStatus: ") == len(EXAMPLES)  # each worked example ends with its verdict
    assert head.index("Example 1") < head.index("Your turn") < head.index("Task: Open the calculator")
    assert "Status:" in parts[-1]["text"]


def test_a_tiny_local_vlm_judges_and_its_answer_is_parsed() -> None:
    judge = LocalVLMJudge("digiq-trl/phone-actor-tiny", max_new_tokens=48)
    prompt = judge.processor.apply_chat_template(judge_messages("Open the Clock app", 2), tokenize=False,
                                                 add_generation_prompt=True)
    assert prompt.count("<|image_pad|>") == 2 and "Your turn" in prompt
    verdict = judge("Open the Clock app", SCREENS)
    assert verdict.reasoning  # the model's answer is kept as the reasoning
    assert verdict == parse_verdict(verdict.reasoning)  # a phone actor answers with an action: no verdict
    assert not verdict.success and verdict.error.startswith("unparsable answer")


# ---------------------------------------------------------------------- an OpenAI-compatible stand-in
class Endpoint(ThreadingHTTPServer):
    """``POST /v1/chat/completions`` on 127.0.0.1 answering ``reply`` (a string, or a function of the
    request); keeps the requests; stops by itself after 60 s."""

    def __init__(self, reply) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply, self.requests = reply, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.timer = threading.Timer(60, self.shutdown)
        self.timer.daemon = True
        self.timer.start()

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        reply = self.server.reply(body) if callable(self.server.reply) else self.server.reply
        if isinstance(reply, int):
            self.send_error(reply)
            return
        if isinstance(reply, str):
            reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply if isinstance(reply, bytes) else reply.encode())

    def log_message(self, *args) -> None:
        pass


def test_the_endpoint_judge_sends_the_screens_and_parses_the_answer() -> None:
    with Endpoint(SUCCESS) as endpoint:
        verdict = EndpointJudge(endpoint.url, "judge-7b", api_key="secret", timeout_s=10)("Open the Clock app", SCREENS)
    assert verdict == Verdict(True, SUCCESS)
    ((path, headers, body),) = endpoint.requests
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret"
    assert (body["model"], body["temperature"]) == ("judge-7b", 0.0)
    urls = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    sent = [Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,")))) for url in urls]
    assert [image.getpixel((0, 0)) for image in sent] == [(255, 255, 255), (0, 0, 128)]


def _slow(body: dict) -> str:
    time.sleep(1.5)
    return SUCCESS


@pytest.mark.parametrize(("reply", "error"), [
    (_slow, "timed out"),
    (500, "HTTP 500"),
    (b"{not json", "JSONDecodeError"),
    (b'{"choices": []}', "IndexError"),
    (json.dumps({"choices": [{"message": {"content": None}}]}).encode(), "no text content"),
    ("The phone shows the clock.", "unparsable answer"),
])
def test_endpoint_errors_are_verdicts_never_successes(reply, error: str) -> None:
    with Endpoint(reply) as endpoint:
        verdict = EndpointJudge(endpoint.url, "judge", timeout_s=0.5)("Open the Clock app", SCREENS)
    assert not verdict.success and error in verdict.error


def test_an_endpoint_that_is_not_there_is_an_error() -> None:
    with Endpoint(SUCCESS) as endpoint:
        url = endpoint.url
    verdict = EndpointJudge(url, "judge", timeout_s=2)("Open the Clock app", SCREENS)
    assert not verdict.success and "Connection refused" in verdict.error


# ---------------------------------------------------------------------- stored with the episode
@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch):
    """A loopback stand-in phone behind an adb server stand-in: ``(adb server option, serial)``."""
    pytest.importorskip("adbutils", reason="the adb extra is not installed")
    from digiq_trl.envs.loopback import AdbServerStandIn, StandInPhone

    monkeypatch.setenv("ADBUTILS_ADB_PATH", "/bin/false")  # never let adbutils start a real adb server
    with AdbServerStandIn({"emulator-5554": StandInPhone(2, split="test")}, lifetime_s=120) as server:
        yield ["--env", "adb:emulator-5554", "--adb-server", f"127.0.0.1:{server.port}", "--settle", "0"]


def _evaluate(tmp_path: Path, *argv: str) -> dict:
    from digiq_trl.cli import main

    assert main(["evaluate", "--protocol", "paper", "--episodes", "2", "--horizon", "3", "--output",
                 str(tmp_path / "eval"), *argv]) == 0
    return json.loads((tmp_path / "eval" / "results.json").read_text())


def test_the_endpoints_verdict_and_reasoning_are_stored_with_the_episode(tmp_path: Path, device: list[str]) -> None:
    with Endpoint(SUCCESS) as endpoint:
        results = _evaluate(tmp_path, *device, "--judge", "endpoint", "--judge-url", endpoint.url, "--judge-model", "j")
    assert results["judge"] == f"endpoint: j at {endpoint.url}"
    assert [(e["success"], e["steps"]) for e in results["episodes"]] == [(True, 1), (True, 1)]  # success ends it
    assert all(e["judge"] == {"success": True, "reasoning": SUCCESS, "error": ""} for e in results["episodes"])
    assert "the Clock app shows its alarms" in (tmp_path / "eval" / "viewer.html").read_text()


def test_judge_errors_are_recorded_per_episode_and_never_count_as_success(tmp_path: Path, device: list[str]) -> None:
    with Endpoint(500) as endpoint:
        results = _evaluate(tmp_path, *device, "--judge", "endpoint", "--judge-url", endpoint.url, "--judge-model", "j")
    assert results["success_rate"] == 0 and results["judge_errors"] == 6  # 2 episodes of 3 steps, every verdict an error
    assert all(e["judge"]["error"] == f"endpoint {endpoint.url}/chat/completions: HTTP 500 Internal Server Error"
               and e["judge_errors"] == 3 for e in results["episodes"])


def test_a_local_vlm_judges_on_a_device_and_its_answers_are_stored(tmp_path: Path, device: list[str]) -> None:
    results = _evaluate(tmp_path, *device, "--judge", "local", "--judge-model", "digiq-trl/phone-actor-tiny")
    assert results["judge"] == "local: digiq-trl/phone-actor-tiny" and results["success_rate"] == 0
    for episode in results["episodes"]:
        assert episode["judge"]["reasoning"] and episode["judge"]["error"].startswith("unparsable answer")
