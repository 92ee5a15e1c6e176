"""The trajectory viewer: thumbnails, episode JSON, the page, the CLI, and the page in headless Chromium.

The browser tests drive Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
so they need the ``chromium`` binary (``apt-get install chromium``) and no Python package or driver;
without Chromium they are skipped.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from PIL import Image

from digiq_trl.actions import DeviceAction, format_action
from digiq_trl.cli import main as cli_main
from digiq_trl.data import split_by_episode
from digiq_trl.envs import collect_transitions
from digiq_trl.envs.policies import NoisyExpertPolicy, add_random_alternatives
from digiq_trl.models.critic import PROVENANCE_FIELDS, DigiQCritic, DigiQCriticModelConfig
from digiq_trl.models.feature_cache import cache_features
from digiq_trl.models.features import VLMFeatureExtractor
from digiq_trl.models.tiny import tiny_qwen2_vl
from digiq_trl.viewer import (
    best_of_n_steps,
    build_episodes,
    default_preparation,
    render_page,
    screenshot_thumbnail,
    task_kind,
    write_dataset_viewer,
    write_viewer,
)
from digiq_trl.viewer.episodes import action_entry
from digiq_trl.viewer.thumbnails import action_label


TAP = format_action(DeviceAction.tap(0.5, 0.25))
SWIPE = format_action(DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)))
TYPE_MILK = format_action(DeviceAction.type_text("milk"))
INVALID = 'Action Decision: "action_type": "8, 0.125]"'
TOLERANCE = 2e-3
"""Critic values shown vs. recomputed without the feature cache (float16 features, batching)."""


def decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


# ------------------------------------------------------------------ fixtures: a small run folder


def fake_preparation(train: Dataset) -> Dataset:
    """What the actor trainer's Best-of-N preparation holds: per state, the logged action first, two
    random alternatives (one sampled twice) and an unparsable sample, with made-up advantages."""
    rows = train.remove_columns(["image", "next_image"]).to_list()
    for index, row in enumerate(rows):
        first, second = row["alt_actions"][:2]
        candidates = [row["action"], first, second, first, INVALID]
        advantages = [0.1 * (index % 3 - 1), 0.05, -0.2, 0.05, -1.0]
        best = max(range(len(candidates)), key=advantages.__getitem__)
        weight = float(advantages[best] > 0.02)
        row.update(
            candidates=candidates, candidate_advantages=advantages, chosen_action=candidates[best],
            chosen_advantage=advantages[best], weight=weight, base_action=second,
            target_action=candidates[best] if weight else row["action"], target_weight=1.0,
        )
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A pipeline-like output folder: data (train/test with alt_actions), representation, critic
    (random heads, provenance recorded) and a Best-of-N preparation of the train split."""
    run = tmp_path_factory.mktemp("viewer") / "run"
    transitions = collect_transitions("digiq_trl/Phone-general-v0", NoisyExpertPolicy(seed=0), 8, seed=0)
    splits = split_by_episode(transitions, 0.25, seed=0)
    data = DatasetDict({name: add_random_alternatives(split, 2, seed) for seed, (name, split) in enumerate(splits.items())})
    data.save_to_disk(str(run / "data"))
    model, processor = tiny_qwen2_vl()
    model.save_pretrained(run / "representation")
    processor.save_pretrained(run / "representation")
    extractor = VLMFeatureExtractor.from_pretrained(str(run / "representation"))
    provenance = {field: extractor.provenance[key] for key, field in PROVENANCE_FIELDS.items()}
    dim = extractor.hidden_size
    torch.manual_seed(0)
    critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=dim, v_input_dim=dim, hidden_size=16,
                                                initializer_range=0.3, **provenance))
    critic.save_pretrained(run / "critic")
    train = load_from_disk(str(run / "data"))["train"]
    fake_preparation(train).save_to_disk(str(run / "actor" / "digiq" / "seed0" / "preparation"))
    return run


@pytest.fixture(scope="module")
def expected_values(run_dir) -> dict[str, list[tuple[float, float, float]]]:
    """``(V, Q, advantage)`` of every step per split, recomputed from the extractor and the critic
    directly (the advantage by the critic's own formula, ``min(Q1, Q2) - max(V1, V2)`` by default)."""
    extractor = VLMFeatureExtractor.from_pretrained(str(run_dir / "representation"))
    critic = DigiQCritic.from_pretrained(str(run_dir / "critic")).eval()
    values = {}
    for name, split in load_from_disk(str(run_dir / "data")).items():
        states, per_state = extractor.state_action_features(
            split["image"], split["goal"], split["history"], [[action] for action in split["action"]]
        )
        v_features, q_features = states.half().float(), torch.stack([f[0] for f in per_state]).half().float()
        with torch.no_grad():
            v = torch.maximum(*critic.v_values(v_features))
            q = torch.maximum(*critic.q_values(q_features))
            adv = critic.advantage(q_features, v_features)
        assert not torch.allclose(adv, q - v), "the default formula combines the Q heads by min"
        values[name] = list(zip(v.tolist(), q.tolist(), adv.tolist()))
    return values


@pytest.fixture(scope="module")
def page(run_dir) -> Path:
    return write_viewer(run_dir)


def page_data(path: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The episodes JSON and the screenshot lists embedded in a page."""
    text = path.read_text(encoding="utf-8")
    scripts = dict(re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', text, re.S))
    data = json.loads(scripts.pop("viewer-data"))
    return data, {key: json.loads(value) for key, value in scripts.items()}


# ------------------------------------------------------------------ thumbnails and episode JSON


def test_thumbnail_draws_a_tap_and_downscales() -> None:
    thumbnail = decode(screenshot_thumbnail(Image.new("RGB", (1080, 2400), "white"), TAP))
    assert thumbnail.height == 320 and thumbnail.width == round(1080 * 320 / 2400)
    red = thumbnail.getpixel((round(0.25 * thumbnail.width), round(0.5 * thumbnail.height)))
    assert red[0] > 200 and red[1] < 80 and red[2] < 80
    assert thumbnail.getpixel((2, 2)) == (255, 255, 255)


def test_thumbnail_writes_typed_text_and_key_presses_in_a_banner() -> None:
    blank = Image.new("RGB", (112, 224), "white")
    typed = decode(screenshot_thumbnail(blank, TYPE_MILK))
    assert typed.size == (112, 224)
    band = typed.crop((0, 205, 112, 224)).convert("L")
    assert band.getpixel((0, 18)) < 100, "a dark banner along the bottom"
    assert band.getextrema()[1] > 200, "with light text on it"
    assert typed.getpixel((1, 1)) == (255, 255, 255)
    assert action_label(TYPE_MILK) == 'type "milk"'
    assert action_label(format_action(DeviceAction.press(5))) == "back"
    assert action_label(INVALID) == "invalid action"
    assert action_label(SWIPE) is None
    assert decode(screenshot_thumbnail(blank, SWIPE)).getpixel((1, 223)) == (255, 255, 255)


def test_task_kind_parses_simulator_goals_only() -> None:
    assert task_kind("Install the Spotify app", "general-train-seed0-ep000003") == "install"
    assert task_kind("Install the Spotify app", "aitw-1234567890") == "unknown"


def test_best_of_n_merges_repeated_candidates_and_marks_the_choice() -> None:
    preparation = Dataset.from_list([{
        "episode_id": "e", "step_id": 1, "action": TAP, "candidates": [TAP, SWIPE, SWIPE, INVALID],
        "candidate_advantages": [0.1, 0.3, 0.3, -1.0], "chosen_action": SWIPE, "weight": 1.0,
        "base_action": TYPE_MILK, "target_action": SWIPE, "target_weight": 1.0,
    }])
    step = best_of_n_steps(preparation)[("e", 1)]
    assert [c["text"] for c in step["candidates"]] == ["tap [0.5, 0.25]", "swipe [0.8, 0.5] -> [0.2, 0.5]", INVALID]
    logged, swipe, invalid = step["candidates"]
    assert logged == {"text": "tap [0.5, 0.25]", "points": [0.5, 0.25, 0.5, 0.25], "advantage": 0.1, "logged": True}
    assert swipe["chosen"] and swipe["count"] == 2 and swipe["advantage"] == 0.3
    assert invalid["invalid"] and "points" not in invalid
    assert (step["base"], step["target"], step["weight"]) == ('type "milk"', swipe["text"], 1.0)
    with pytest.raises(ValueError, match="candidates"):
        best_of_n_steps(preparation.remove_columns("candidates"))


def test_build_episodes_groups_steps_and_joins_values(run_dir) -> None:
    data = load_from_disk(str(run_dir / "data"))
    values = {name: {"v": [0.5] * len(split), "q": [float(i) for i in range(len(split))],
                     "advantage": [0.0] * len(split)} for name, split in data.items()}
    episodes, screenshots = build_episodes(dict(data), values)
    for name, split in data.items():
        ids = list(dict.fromkeys(split["episode_id"]))
        mine = [ep for ep in episodes if ep["split"] == name]
        assert [ep["id"] for ep in mine] == ids
        assert sum(len(ep["steps"]) for ep in mine) == len(split)
        assert [step["q"] for ep in mine for step in ep["steps"]] == [float(i) for i in range(len(split))]
        for ep in mine:
            rewards = [r for e, r in zip(split["episode_id"], split["trajectory_reward"]) if e == ep["id"]]
            assert ep["success"] == (rewards[0] > 0)
            assert ep["kind"] != "unknown"
    assert {ep["success"] for ep in episodes} == {True, False}, "the fixture should hold both outcomes"
    assert [len(shots) for shots in screenshots] == [len(ep["steps"]) for ep in episodes]
    assert episodes[0]["steps"][0]["raw"] == data["train"][0]["action"]


def test_page_is_self_contained_and_escapes_the_data() -> None:
    goal = 'Search for "</script><img src=x onerror=alert(1)>"'
    episode = {"id": "e", "split": "data", "goal": goal, "kind": "unknown", "success": False,
               "steps": [{"text": "home", "raw": "x", "reward": 0.0, "mc_return": 0.0, "done": True}]}
    html = render_page([episode], [["data:image/png;base64,AAAA"]], title="<b>run</b>")
    assert html.count("</script>") == html.count("<script")
    assert "&lt;b&gt;run&lt;/b&gt;" in html and "<b>run</b>" not in html
    assert "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert not re.search(r"<link|@import|url\(", html)
    scripts = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    assert json.loads(scripts[0])["episodes"][0]["goal"] == goal
    with pytest.raises(ValueError):
        render_page([episode], [])


def test_cli_needs_exactly_one_source(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["view"])
    with pytest.raises(SystemExit):
        cli_main(["view", str(tmp_path), "--dataset", str(tmp_path)])
    assert "either RUN_DIR or --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        cli_main(["view", "--help"])
    assert help_exit.value.code == 0 and "--max-episodes" in capsys.readouterr().out


def test_cli_ends_a_bad_dataset_in_one_line(tmp_path, capsys) -> None:
    from datasets import Dataset

    from digiq_trl.data.schema import transition_features

    Dataset.from_dict({name: [] for name in transition_features()}, features=transition_features()).save_to_disk(
        str(tmp_path / "empty"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as failed:
        cli_main(["view", "--dataset", str(tmp_path / "empty"), "--output", str(tmp_path / "page.html")])
    err = capsys.readouterr().err.strip()
    assert failed.value.code == 1 and "Traceback" not in err
    assert err.endswith("empty: has no rows (a saved dataset without data files)") and len(err.splitlines()) == 1
    assert not (tmp_path / "page.html").exists()


# ------------------------------------------------------------------ writing pages from runs and datasets


@pytest.mark.slow
def test_write_viewer_shows_critic_values_and_candidates(run_dir, page, expected_values) -> None:
    data, screenshots = page_data(page)
    assert page == run_dir / "viewer.html" and data["critic"] == str(run_dir / "critic")
    assert data["best_of_n"] == str(default_preparation(run_dir))
    assert data["advantage_formula"] == "min(Q1, Q2) - max(V1, V2)"  # the run's critic combines with min
    for name, values in expected_values.items():
        steps = [step for ep in data["episodes"] if ep["split"] == name for step in ep["steps"]]
        assert len(steps) == len(values)
        for step, (v, q, adv) in zip(steps, values):
            assert step["v"] == pytest.approx(v, abs=TOLERANCE) and step["q"] == pytest.approx(q, abs=TOLERANCE)
            assert step["advantage"] == pytest.approx(adv, abs=TOLERANCE)
    train_steps = [step for ep in data["episodes"] if ep["split"] == "train" for step in ep["steps"]]
    assert all("best_of_n" in step for step in train_steps)
    assert not any("best_of_n" in step for ep in data["episodes"] if ep["split"] == "test" for step in ep["steps"])
    assert len(screenshots) == len(data["episodes"])


@pytest.mark.slow
def test_write_viewer_reads_the_features_the_pipeline_cached(run_dir, tmp_path) -> None:
    run = tmp_path / "run"
    load_from_disk(str(run_dir / "data")).save_to_disk(str(run / "data"))
    for name in ("critic", "representation", "actor"):
        shutil.copytree(run_dir / name, run / name)
    extractor = VLMFeatureExtractor.from_pretrained(str(run_dir / "representation"))
    for split in load_from_disk(str(run / "data")).values():
        cache_features(split, extractor, alt_actions_column="alt_actions")
    cached = set((run / "data").glob("*/cache-*.arrow"))
    write_viewer(run, extractor=extractor)
    assert set((run / "data").glob("*/cache-*.arrow")) == cached, "the viewer computed features again"


@pytest.mark.slow
def test_cli_views_a_dataset_with_a_critic_and_a_limit(run_dir, tmp_path, capsys) -> None:
    output = tmp_path / "page.html"
    cli_main(["view", "--dataset", str(run_dir / "data"), "--critic", str(run_dir / "critic"),
              "--max-episodes", "2", "--output", str(output)])
    assert json.loads(capsys.readouterr().out)["output"] == str(output)
    data, _ = page_data(output)
    assert [ep["split"] for ep in data["episodes"]] == ["train", "train", "test", "test"]
    assert all("v" in step and "best_of_n" not in step for ep in data["episodes"] for step in ep["steps"])
    plain = write_dataset_viewer(load_from_disk(str(run_dir / "data"))["test"], tmp_path / "plain.html")
    assert all("v" not in step for ep in page_data(plain)[0]["episodes"] for step in ep["steps"])


# ------------------------------------------------------------------ the page in headless Chromium

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-pipe",
)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe: Chromium reads commands from
    its fd 3 and writes replies and events to its fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()

        def wire_pipes() -> None:
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._replies], [], [], remaining)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events meanwhile go to ``events``)."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") != self._last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The first event called ``method`` (received already, or waited for)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


class Tab:
    """One page of a :class:`Chromium`, with network, log and page events recorded."""

    def __init__(self, browser: Chromium, url: str, width: int = 1400, height: int = 900) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Log", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        browser.events.clear()
        start = time.perf_counter()
        self.send("Page.navigate", url=url)
        browser.wait_for("Page.loadEventFired", timeout=60)
        self.load_seconds = time.perf_counter() - start

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, session=self.session, **params)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (exceptions fail the test)."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def press(self, key: str) -> None:
        codes = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40}
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=codes[key])

    def screenshot(self) -> Image.Image:
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        return Image.open(io.BytesIO(png)).convert("RGB")

    def events(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.browser.events
                if event.get("method") == method and event.get("sessionId") == self.session]

    def close(self) -> None:
        self.browser.send("Target.closeTarget", targetId=self.send("Target.getTargetInfo")["targetInfo"]["targetId"])


def chromium_binary() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    chromium = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture
def tab(browser, page):
    opened = Tab(browser, page.as_uri())
    yield opened
    opened.close()


def shown(tab: Tab) -> dict[str, Any]:
    """What the page shows now: episode id, step, strip and detail values, candidate rows."""
    return tab.js("""(() => {
      const text = (selector) => [...document.querySelectorAll(selector)].map((node) => node.textContent);
      const field = (name) => document.querySelector(`#step-values tr[data-field="${name}"] td`)?.textContent;
      return {episode: document.querySelector("#episode").dataset.episode,
              step: Number(document.querySelector("#episode").dataset.step),
              v: field("V(s)"), q: field("Q(s, a)"), strip_v: text(".step .v"), strip_q: text(".step .q"),
              candidates: text("#candidates tr[data-candidate] td.action"),
              advantages: text("#candidates tr[data-candidate] td.advantage"),
              chosen: text("#candidates tr.chosen td.action"),
              images: document.images.length,
              loaded: [...document.images].every((image) => image.complete && image.naturalWidth > 0)};
    })()""")


@pytest.mark.slow
def test_page_renders_in_chromium(tab, page) -> None:
    screenshot = tab.screenshot()
    screenshot.save(page.with_name("viewer.png"))
    colours = screenshot.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200, "the page looks blank"
    box = tab.js("(({left, top, right, bottom}) => [left, top, right, bottom])(document.getElementById('screen').getBoundingClientRect())")
    low, high = screenshot.crop(tuple(round(x) for x in box)).convert("L").getextrema()
    assert box[2] - box[0] > 100 and high - low > 100, "the open step's screenshot is not painted"
    assert shown(tab)["loaded"]
    assert not tab.events("Runtime.exceptionThrown")


@pytest.mark.slow
def test_known_episode_shows_its_values_and_candidates(tab, run_dir, expected_values) -> None:
    train = load_from_disk(str(run_dir / "data"))["train"]
    preparation = load_from_disk(str(default_preparation(run_dir)))
    first = train[0]["episode_id"]
    length = train["episode_id"].count(first)
    assert length >= 3
    now = shown(tab)
    assert now["episode"] == first and now["step"] == 0
    assert now["images"] == length + 1, "only the open episode's screenshots (strip and detail) are in the page"
    expected = expected_values["train"][:length]
    assert [float(x) for x in now["strip_v"]] == pytest.approx([v for v, _, _ in expected], abs=TOLERANCE)
    assert [float(x) for x in now["strip_q"]] == pytest.approx([q for _, q, _ in expected], abs=TOLERANCE)
    for step in range(3):
        now = shown(tab)
        row = preparation[step]
        unique = dict(zip(row["candidates"], row["candidate_advantages"]))
        assert now["candidates"] == [action_entry(text)["text"] for text in unique]
        assert [float(a) for a in now["advantages"]] == pytest.approx(list(unique.values()), abs=1e-4)
        assert now["chosen"] == [action_entry(row["chosen_action"])["text"]]
        assert float(now["v"]) == pytest.approx(expected[step][0], abs=TOLERANCE)
        assert float(now["q"]) == pytest.approx(expected[step][1], abs=TOLERANCE)
        tab.press("ArrowRight")


@pytest.mark.slow
def test_arrow_keys_move_between_steps_and_episodes(tab, page) -> None:
    data, _ = page_data(page)
    episodes = data["episodes"]
    tab.press("ArrowLeft")
    assert shown(tab)["step"] == 0
    for _ in range(len(episodes[0]["steps"]) + 2):
        tab.press("ArrowRight")
    assert shown(tab)["step"] == len(episodes[0]["steps"]) - 1
    tab.press("ArrowDown")
    assert (shown(tab)["episode"], shown(tab)["step"]) == (episodes[1]["id"], 0)
    assert shown(tab)["images"] == len(episodes[1]["steps"]) + 1
    tab.press("ArrowUp")
    tab.press("ArrowUp")
    assert shown(tab)["episode"] == episodes[0]["id"]
    assert tab.js("location.hash") == "#" + quote(episodes[0]["id"], safe="") + "/0"


@pytest.mark.slow
def test_filters_and_deep_links(browser, tab, page) -> None:
    data, _ = page_data(page)
    failures = [ep["id"] for ep in data["episodes"] if not ep["success"]]
    tab.js("""(() => { const select = document.getElementById("filter-outcome");
      select.value = "failure"; select.dispatchEvent(new Event("change")); })()""")
    listed = tab.js('[...document.querySelectorAll("#episodes li:not([hidden])")].map((li) => li.dataset.episode)')
    assert listed == failures
    assert shown(tab)["episode"] == failures[0]
    tab.press("ArrowDown")
    assert shown(tab)["episode"] == failures[1]
    test_episode = next(ep for ep in data["episodes"] if ep["split"] == "test")
    linked = Tab(browser, f"{page.as_uri()}#{quote(test_episode['id'])}/1")
    assert (shown(linked)["episode"], shown(linked)["step"]) == (test_episode["id"], 1)
    assert shown(linked)["candidates"] == []
    linked.close()


@pytest.mark.slow
def test_opening_the_page_makes_no_network_request(tab, page) -> None:
    tab.press("ArrowDown")
    tab.press("ArrowRight")
    urls = [event["request"]["url"] for event in tab.events("Network.requestWillBeSent")]
    assert page.as_uri() in urls, "the request log should hold at least the page itself"
    assert [url for url in urls if not url.startswith(("file:", "data:"))] == []
    blocked = [entry["entry"]["text"] for entry in tab.events("Log.entryAdded")]
    assert blocked == [], "the page tried to load something (Content-Security-Policy or network errors)"


def test_an_evaluations_judge_verdicts_and_device_errors_are_shown(browser, tmp_path) -> None:
    data = collect_transitions("digiq_trl/Phone-general-v0", NoisyExpertPolicy(seed=0), num_episodes=2, seed=0)
    first, second = "general-train-seed0-ep000000", "general-train-seed0-ep000001"
    notes = {first: {"judge": {"success": True, "reasoning": "Expected: results.\nSeen: results.\nStatus: success",
                               "error": ""}},
             second: {"judge": {"success": False, "reasoning": "", "error": "endpoint http://x/v1: timed out"},
                      "error": "device emulator-5554: the screenshot is not an image"}}
    page = write_dataset_viewer(data, tmp_path / "eval.html", notes=notes)
    assert [ep.get("judge", {}).get("success") for ep in page_data(page)[0]["episodes"]] == [True, False]
    text = "(() => [document.getElementById('judge')?.innerText, document.getElementById('device-error')?.innerText])()"
    opened = Tab(browser, f"{page.as_uri()}#{quote(first)}/0")
    assert opened.js(text) == ["Judge: success.\nExpected: results.\nSeen: results.\nStatus: success", None]
    opened.close()
    opened = Tab(browser, f"{page.as_uri()}#{quote(second)}/0")
    assert opened.js(text) == ["Judge: no decision. endpoint http://x/v1: timed out",
                               "device emulator-5554: the screenshot is not an image"]
    opened.close()


# ------------------------------------------------------------------ evaluation episodes side by side


def _record(goal: str, success: bool, mode: str = "", actions: tuple[str, ...] = ("tap [0.5, 0.5]",)) -> dict:
    return {"goal": goal, "kind": "search", "interruption": mode == "overlay never dismissed", "success": success,
            "steps": len(actions), "failure_mode": mode, "actions": list(actions)}


def test_evaluation_page_shows_each_goal_across_methods(tmp_path) -> None:
    from digiq_trl.viewer.comparison import comparison_rows, write_comparison

    base = [_record("Search for news", False, "overlay never dismissed"), _record("Open Gmail", True)]
    digiq = [_record("Search for news", True, actions=("back", 'type "news"', "enter")), _record("Open Gmail", True)]
    results = {"eval_split": "test", "eval_phone": "target", "methods": {
        "base": {"success_rate": 0.5, "episodes": {"0": base}},
        "digiq": {"success_rate": 1.0, "episodes": {"0": digiq}}}}
    rows = comparison_rows(results)
    assert [(r["goal"], r["interruption"]) for r in rows] == [("Search for news", True), ("Open Gmail", False)]
    assert rows[0]["methods"]["digiq"]["actions"] == ["back", 'type "news"', "enter"]
    page = write_comparison(results, tmp_path / "evaluation.html").read_text()
    assert 'data-base="overlay never dismissed" data-digiq="success"' in page
    assert "<li>type &quot;news&quot;</li>" in page and '<option value="wrong element tapped">' in page
    results["methods"]["digiq"]["episodes"]["0"][1]["goal"] = "Open Maps"
    with pytest.raises(ValueError, match="episode 1: different goals"):
        comparison_rows(results)
    with pytest.raises(ValueError, match="no evaluation episodes"):
        comparison_rows({"methods": {"base": {"success_rate": 0.4}}})
