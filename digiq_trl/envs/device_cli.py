"""Command-line options shared by ``digiq-trl evaluate`` and ``digiq-trl collect``: where episodes
run (``--env sim`` or ``--env adb:SERIAL[,SERIAL...]``), how a device's episodes are judged, and
which actor plays.

Only argparse is imported at module level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


DEFAULT_ADB_SERVER = f"127.0.0.1:{os.environ.get('ANDROID_ADB_SERVER_PORT', '5037')}"
JUDGES = ("simulator", "local", "endpoint")
JUDGE_API_KEY_VARIABLE = "DIGIQ_JUDGE_API_KEY"
"""The environment variable an endpoint judge's API key is read from (never a flag: it would show in ``ps``)."""


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--env``, the adb options and the judge options."""
    parser.add_argument("--env", default="sim", help="'sim' (the simulated phone) or 'adb:SERIAL[,SERIAL...]' "
                        "(devices over adb, played in lockstep; `adb devices` lists serials)")
    parser.add_argument("--adb-server", default=DEFAULT_ADB_SERVER, help="HOST:PORT of the adb server")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait after each action on a device")
    parser.add_argument("--step-timeout", type=float, default=10.0, help="most seconds one adb command may take")
    parser.add_argument("--judge", choices=JUDGES, help="who decides success on a device: 'local' (a VLM run here, "
                        "--judge-model), 'endpoint' (an OpenAI-compatible server, --judge-url and --judge-model, key in "
                        f"${JUDGE_API_KEY_VARIABLE}) or 'simulator' (digiq-trl's loopback stand-in phone only); "
                        "the simulated phone is always judged by its exact test")
    parser.add_argument("--judge-model", help="the judge's Hub id or folder (local), or served model name (endpoint)")
    parser.add_argument("--judge-url", help="the endpoint's API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge-timeout", type=float, default=60.0, help="most seconds one endpoint request may take")


def device_serials(env: str) -> list[str] | None:
    """The serials of ``--env adb:SERIAL[,SERIAL...]``, or None for ``--env sim``.

    Raises:
        SystemExit: any other value.
    """
    if env == "sim":
        return None
    serials = [s for s in env.removeprefix("adb:").split(",") if s] if env.startswith("adb:") else []
    if not serials:
        raise SystemExit(f"--env must be 'sim' or 'adb:SERIAL[,SERIAL...]', got {env!r}")
    return serials


def check_judge(args: argparse.Namespace) -> None:
    """Refuse judge options that do not fit ``--env`` before anything is loaded."""
    on_device = device_serials(args.env) is not None
    if not on_device and args.judge not in (None, "simulator"):
        raise SystemExit("--env sim is judged by the simulator's exact test; drop --judge")
    if on_device and args.judge is None:
        raise SystemExit("on a device, choose a judge: --judge local or --judge endpoint "
                         "(--judge simulator for digiq-trl's loopback stand-in)")
    if args.judge in ("local", "endpoint") and not args.judge_model:
        raise SystemExit(f"--judge {args.judge} needs --judge-model")
    if args.judge == "endpoint" and not args.judge_url:
        raise SystemExit("--judge endpoint needs --judge-url")


def device_envs(args: argparse.Namespace, suite: str, split: str, horizon: int | None = None) -> list[Any]:
    """One :class:`~digiq_trl.envs.android.AndroidDeviceEnv` per serial of ``--env``, with the judge."""
    from .android import AndroidDeviceEnv
    from .loopback import attach_simulator

    host, _, port = args.adb_server.rpartition(":")
    judge = _model_judge(args)
    envs = [AndroidDeviceEnv(serial, suite=suite, split=split, horizon=horizon, judge=judge, settle_s=args.settle,
                             timeout_s=args.step_timeout, adb_server=(host or "127.0.0.1", int(port)))
            for serial in device_serials(args.env) or []]
    return [attach_simulator(env) for env in envs] if args.judge == "simulator" else envs


def judge_description(args: argparse.Namespace) -> str:
    """What judged the episodes, for the results."""
    if device_serials(args.env) is None or args.judge == "simulator":
        return "simulator (exact test)"
    return f"{args.judge}: {args.judge_model}" + (f" at {args.judge_url}" if args.judge == "endpoint" else "")


def _model_judge(args: argparse.Namespace) -> Any:
    """The local or endpoint judge (one, shared by all devices), or None."""
    from ..judges import EndpointJudge, LocalVLMJudge

    if args.judge == "local":
        return LocalVLMJudge(args.judge_model)
    if args.judge == "endpoint":
        return EndpointJudge(args.judge_url, args.judge_model, api_key=os.environ.get(JUDGE_API_KEY_VARIABLE),
                             timeout_s=args.judge_timeout)
    return None


def add_actor_arguments(parser: argparse.ArgumentParser, default: str | None = "digiq-trl/phone-actor-tiny") -> None:
    """Add ``--actor`` and ``--base``."""
    parser.add_argument("--actor", default=default, help="the actor: a model (Hub id, folder, or a shipped name "
                        "such as digiq-trl/phone-actor-tiny) or a LoRA adapter folder or Hub id (merged into its base)")
    parser.add_argument("--base", help="an adapter's base model, when the path its adapter_config.json records "
                        "is not here")


def load_actor(name: str, base: str | None = None) -> tuple[Any, Any]:
    """The actor's model and processor: a model, or an adapter merged into its base.

    Raises:
        SystemExit: ``name`` is neither (a missing folder, or a Hub id not in the cache offline).
    """
    from peft import PeftConfig, PeftModel

    from ..models.loading import load_vlm
    from ..models.pretrained import resolve_pretrained
    from ..models.processing import load_processor

    path = resolve_pretrained(name)
    try:
        adapter = PeftConfig.from_pretrained(path)
    except (OSError, ValueError):
        adapter = None
    base_name = base or (adapter.base_model_name_or_path if adapter is not None else name)
    try:
        model = load_vlm(base_name)
    except OSError as error:
        raise SystemExit(f"cannot load the actor {base_name!r}: {error}") from None
    if adapter is not None:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.eval(), load_processor(base_name)
