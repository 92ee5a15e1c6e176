"""The simulated phone served over the adb protocol on loopback: a device-side stand-in for tests.

No emulator runs here, so :class:`~digiq_trl.envs.android.AndroidDeviceEnv` is proven against a
stand-in whose screen and input are a :class:`~digiq_trl.envs.phone.PhoneEnv`:

- :class:`StandInPhone` is the device: it runs the shell commands the env sends (``screencap -p``,
  ``input tap|swipe|text|keyevent``, the ADBKeyBoard broadcast, ``am force-stop``) on the simulated
  phone, and two of its own: ``digiq-phone start SEED [GOAL]`` starts one of the simulator's
  episodes, ``digiq-phone verdict`` prints the simulator's exact success test as JSON. Its screen is
  the simulator's screenshot at the actor's size, enlarged ``scale`` times (nearest neighbour), so
  the env's box-filter resize gives back exactly the simulator's pixels.
- :class:`AdbServerStandIn` speaks the adb server's host protocol (what ``adbutils`` and the ``adb``
  command talk to), with stand-in phones as its devices: the env's client runs unchanged.
- :class:`AdbdStandIn` speaks the device side of the adb transport protocol (what ``adbd`` on a
  phone speaks), so the real adb server can ``adb connect`` to one stand-in phone.
- :class:`LoopbackSimulator` is the env's ``prepare`` hook and judge for a stand-in: it starts the
  simulator's episode over adb and reads its exact verdict back.

Every server binds 127.0.0.1 only and stops after ``lifetime_s`` at the latest.

Example::

    python -m digiq_trl.envs.loopback --port 5038 --serials emulator-5554 --lifetime 600 &
    digiq-trl evaluate --env adb:emulator-5554 --adb-server 127.0.0.1:5038 --judge simulator ...
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shlex
import socketserver
import struct
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from ..actions import ActionType, DeviceAction
from ..judges import Verdict
from .android import ADB_KEYBOARD_ACTION, AndroidDeviceEnv, DeviceError, to_normalized
from .phone import PhoneEnv
from .tasks import is_success


KEYS = {"KEYCODE_BACK": ActionType.PRESS_BACK, "4": ActionType.PRESS_BACK,
        "KEYCODE_HOME": ActionType.PRESS_HOME, "3": ActionType.PRESS_HOME,
        "KEYCODE_ENTER": ActionType.PRESS_ENTER, "66": ActionType.PRESS_ENTER}
"""Key events the stand-in understands, by name and by Android key code."""
SERVER_VERSION = 41
"""The adb server protocol version the host stand-in reports (adb 1.0.41)."""


def decode_input_text(argument: str) -> str:
    """What Android's ``input text`` types for ``argument``: each ``%s`` becomes a space, as its
    own parser reads it (a ``%`` before anything but ``s`` stays).

    Example:
        >>> decode_input_text("50%%soff%sto%day")
        '50% off to%day'
    """
    chars, escaped, out = list(argument), False, []
    for char in chars:
        if escaped and char == "s":
            out[-1] = " "
            escaped = False
            continue
        out.append(char)
        escaped = char == "%"
    return "".join(out)


def split_commands(line: str) -> list[list[str]]:
    """A shell command line as its commands' argument lists, split at ``;`` (POSIX quoting, like
    the device's ``sh``)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


class StandInPhone:
    """A simulated phone that runs shell commands as an Android device would.

    Args:
        scale: the screen is the simulator's screenshot enlarged this many times.
        phone_kwargs: the :class:`~digiq_trl.envs.phone.PhoneEnv` configuration (suite, split,
            width, height, phone, layout, ...).
    """

    def __init__(self, scale: int = 10, **phone_kwargs: Any) -> None:
        self.env = PhoneEnv(**phone_kwargs)
        self.env.reset(seed=0)
        self.scale = scale
        self.corrupt_screenshots = 0
        """How many of the next screenshots (``screencap``) are bytes that are no image (a fault to test with)."""
        self.log: list[str] = []
        """Every command line run, in order."""
        self.lock = threading.Lock()

    @property
    def size(self) -> tuple[int, int]:
        """The screen's ``(width, height)`` in pixels."""
        return self.env.width * self.scale, self.env.height * self.scale

    def run(self, line: str) -> bytes:
        """Run a shell command line; its output (a missing command prints what ``sh`` prints)."""
        with self.lock:
            self.log.append(line)
            return b"".join(self._run_one(argv) for argv in split_commands(line))

    def _run_one(self, argv: list[str]) -> bytes:
        """One command; malformed arguments print a usage error, as Android's tools do."""
        try:
            return self._run(argv)
        except (ValueError, IndexError) as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return f"{argv[0]}: bad arguments {argv[1:]!r}: {error}\n".encode()

    def _run(self, argv: list[str]) -> bytes:
        name, args = argv[0], argv[1:]
        if name == "screencap":
            return self._screencap()
        if name == "input" and args:
            self._input(args[0], args[1:])
        elif name == "am" and args[:1] == ["broadcast"] and ADB_KEYBOARD_ACTION in args:
            self._apply(DeviceAction.type_text(base64.b64decode(args[args.index("msg") + 1]).decode("utf-8")))
        elif name == "digiq-phone" and args[:1] == ["start"]:
            seed = None if args[1] == "none" else int(args[1])
            observation, _ = self.env.reset(seed=seed, options={"goal": args[2]} if len(args) > 2 else None)
            return observation["goal"].encode("utf-8")
        elif name == "digiq-phone" and args == ["verdict"]:
            device = self.env.device
            return json.dumps({"success": is_success(self.env.task, device), "screen": device.screen.kind}).encode()
        elif argv[:2] != ["am", "force-stop"]:  # force-stop: the next episode starts on the home screen anyway
            return f"/system/bin/sh: {name}: inaccessible or not found\n".encode()
        return b""

    def _screencap(self) -> bytes:
        if self.corrupt_screenshots > 0:
            self.corrupt_screenshots -= 1
            return b"\x89PNG\r\n\x1a\nnot really"
        image = self.env.render()
        big = Image.fromarray(image).resize(self.size, Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        big.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def _input(self, kind: str, args: list[str]) -> None:
        if kind == "tap":
            self._apply(DeviceAction.tap(*to_normalized((float(args[0]), float(args[1])), self.size)))
        elif kind == "swipe":
            start = to_normalized((float(args[0]), float(args[1])), self.size)
            end = to_normalized((float(args[2]), float(args[3])), self.size)
            self._apply(DeviceAction.swipe(start, end))
        elif kind == "text":
            self._apply(DeviceAction.type_text(decode_input_text(args[0])))
        elif kind == "keyevent" and args[0] in KEYS:
            self._apply(DeviceAction.press(KEYS[args[0]]))

    def _apply(self, action: DeviceAction) -> None:
        if action.is_valid:
            self.env.device.apply(action)


# ---------------------------------------------------------------------- servers
class _LoopbackServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server on 127.0.0.1 that serves from a daemon thread and stops after ``lifetime_s``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler], port: int, lifetime_s: float) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.port = self.server_address[1]
        self.timer = threading.Timer(lifetime_s, self.stop)
        self.timer.daemon = True
        self._serving: threading.Thread | None = None
        self._stopping = threading.Lock()

    def start(self) -> _LoopbackServer:
        """Serve in the background; returns ``self``."""
        self._serving = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._serving.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent, from any thread but the serving one)."""
        self.timer.cancel()
        with self._stopping:
            if self._serving is not None:
                self.shutdown()
                self._serving = None
            self.server_close()

    def __enter__(self) -> _LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_exactly(sock: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the peer closed the connection")
        data += chunk
    return data


def _block(text: str) -> bytes:
    """A host-protocol string: four hex digits of length, then the UTF-8 bytes."""
    data = text.encode("utf-8")
    return b"%04x" % len(data) + data


class _HostHandler(socketserver.BaseRequestHandler):
    """One client connection to the host stand-in: host requests, then at most one device service."""

    server: AdbServerStandIn

    def handle(self) -> None:
        self.request.settimeout(self.server.client_timeout_s)
        phone = None
        try:
            while True:
                request = _read_exactly(self.request, int(_read_exactly(self.request, 4), 16)).decode("utf-8")
                phone = self._answer(request, phone)
        except (EOFError, OSError, ValueError):
            return

    def _answer(self, request: str, phone: StandInPhone | None) -> StandInPhone | None:
        """Answer one request; returns the phone the connection is now bound to (``host:transport``)."""
        send, phones = self.request.sendall, self.server.phones
        if phone is not None and request.split(":", 1)[0] in ("shell", "exec"):
            send(b"OKAY")  # the service opened; its output follows as the command runs
            send(phone.run(request.split(":", 1)[1]))
            raise EOFError("a service ends its connection")
        if request == "host:version":
            send(b"OKAY" + _block(f"{SERVER_VERSION:04x}"))
        elif request in ("host:devices", "host:devices-l"):
            send(b"OKAY" + _block("".join(f"{serial}\tdevice\n" for serial in phones)))
        elif request == "host:kill":
            send(b"OKAY")
            threading.Thread(target=self.server.stop, daemon=True).start()
        elif request.startswith(("host:tport:serial:", "host:transport:")):
            serial = request.split(":", 2)[2] if request.startswith("host:transport:") else request[18:]
            if serial not in phones:
                send(b"FAIL" + _block(f"device '{serial}' not found"))
                raise EOFError("no such device")
            send(b"OKAY" + (struct.pack("<Q", 1) if request.startswith("host:tport:") else b""))
            return phones[serial]
        elif request.startswith("host-serial:") and request.endswith(":get-state"):
            serial = request[len("host-serial:"):-len(":get-state")]
            send(b"OKAY" + _block("device") if serial in phones else b"FAIL" + _block(f"device '{serial}' not found"))
        else:
            send(b"FAIL" + _block(f"unsupported request {request!r}"))
        return phone


class AdbServerStandIn(_LoopbackServer):
    """An adb server stand-in on 127.0.0.1 whose devices are stand-in phones (:class:`StandInPhone`), by serial.

    Speaks enough of the host protocol for ``adbutils`` and ``adb -P PORT shell``: ``host:version``,
    ``host:devices``, ``host:transport`` / ``host:tport`` then ``shell:`` or ``exec:``, ``get-state``
    and ``host:kill``. :meth:`unplug` takes a device away (as a cable pulled mid-episode would).

    Args:
        phones: the devices, by serial.
        port: the port to listen on (0: any free port, then read ``port``).
        lifetime_s: the server stops by itself after this many seconds.
        client_timeout_s: a silent client connection is dropped after this many seconds.
    """

    def __init__(self, phones: dict[str, StandInPhone], port: int = 0, lifetime_s: float = 600.0,
                 client_timeout_s: float = 30.0) -> None:
        self.phones = dict(phones)
        self.client_timeout_s = client_timeout_s
        super().__init__(_HostHandler, port, lifetime_s)

    def unplug(self, serial: str) -> None:
        """The device ``serial`` is gone from now on."""
        self.phones.pop(serial, None)


# Device-side adb transport: 24-byte little-endian headers (command, arg0, arg1, length, checksum, magic).
A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (int.from_bytes(name, "little") for name in (b"CNXN", b"OPEN", b"OKAY",
                                                                                       b"CLSE", b"WRTE"))
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
BANNER = b"device::ro.product.name=digiq_phone;ro.product.model=digiq_stand_in;ro.product.device=digiq_phone;features=cmd"
"""What the stand-in tells the adb server it is, as ``adbd`` does in its CNXN message."""


def _message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    checksum = sum(data) & 0xFFFFFFFF
    return struct.pack("<6I", command, arg0, arg1, len(data), checksum, command ^ 0xFFFFFFFF) + data


class _DeviceHandler(socketserver.BaseRequestHandler):
    """The transport connection of the real adb server to one stand-in phone (one stream at a time)."""

    server: AdbdStandIn

    def handle(self) -> None:
        self.request.settimeout(self.server.client_timeout_s)
        streams = 0
        try:
            while True:
                command, arg0, _, data = self._receive()
                if command == A_CNXN:
                    self.request.sendall(_message(A_CNXN, A_VERSION, MAX_PAYLOAD, BANNER))
                elif command == A_OPEN:
                    streams += 1
                    self._serve(streams, arg0, data.rstrip(b"\0").decode("utf-8"))
                elif command == A_WRTE:
                    self.request.sendall(_message(A_OKAY, 0, arg0))
        except (EOFError, OSError, ValueError):
            return

    def _receive(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, _, _ = struct.unpack("<6I", _read_exactly(self.request, 24))
        return command, arg0, arg1, _read_exactly(self.request, length)

    def _serve(self, local: int, remote: int, service: str) -> None:
        """Run a ``shell:`` or ``exec:`` service and stream its output, waiting for each chunk's OKAY."""
        kind, _, line = service.partition(":")
        if kind not in ("shell", "exec"):
            self.request.sendall(_message(A_CLSE, 0, remote))
            return
        self.request.sendall(_message(A_OKAY, local, remote))
        output = self.server.phone.run(line)
        for start in range(0, len(output), MAX_PAYLOAD):
            self.request.sendall(_message(A_WRTE, local, remote, output[start:start + MAX_PAYLOAD]))
            if not self._acknowledged():
                return
        self.request.sendall(_message(A_CLSE, local, remote))

    def _acknowledged(self) -> bool:
        """Wait for the host's OKAY to the last write: True, or False when it closed the stream instead."""
        while (command := self._receive()[0]) not in (A_OKAY, A_CLSE):
            pass
        return command == A_OKAY


class AdbdStandIn(_LoopbackServer):
    """One stand-in phone behind the device side of the adb transport protocol, on 127.0.0.1.

    The real adb server reaches it with ``adb connect 127.0.0.1:PORT`` (the serial is that address);
    it asks for no authentication, as a device with ``ro.adb.secure=0`` does.

    Args:
        phone: the device.
        port: the port to listen on (0: any free port, then read ``port``).
        lifetime_s: the server stops by itself after this many seconds.
        client_timeout_s: a silent connection is dropped after this many seconds.
    """

    def __init__(self, phone: StandInPhone, port: int = 0, lifetime_s: float = 600.0,
                 client_timeout_s: float = 120.0) -> None:
        self.phone = phone
        self.client_timeout_s = client_timeout_s
        super().__init__(_DeviceHandler, port, lifetime_s)


# ---------------------------------------------------------------------- the env's side
class LoopbackSimulator:
    """Drives a stand-in phone's simulator over adb for an :class:`~digiq_trl.envs.android.AndroidDeviceEnv`:
    the env's ``prepare`` hook starts the simulator's episode with reset's seed and goal, and its judge
    is the simulator's exact success test (no model involved).

    Use :func:`attach_simulator`.
    """

    def __init__(self, env: AndroidDeviceEnv) -> None:
        self.env = env

    def prepare(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Start the stand-in's episode as ``PhoneEnv.reset(seed=seed, options=options)`` would.

        Raises:
            DeviceError: the stand-in's episode has another goal than the env's (its phone was
                configured with another suite or split).
        """
        goal = (options or {}).get("goal")
        command = f"digiq-phone start {'none' if seed is None else seed}" + (f" {shlex.quote(goal)}" if goal else "")
        started = self.env.shell(command)
        if started != self.env.goal:
            raise DeviceError(f"the stand-in started {started!r}, not {self.env.goal!r}: is it the same suite and split?")

    def __call__(self, goal: str, screens: Sequence[Image.Image]) -> Verdict:
        """The simulator's exact test of the stand-in's current state."""
        answer = self.env.shell("digiq-phone verdict")
        try:
            state = json.loads(answer)
        except json.JSONDecodeError:
            return Verdict(False, answer, "the stand-in's verdict is not JSON: is the device a digiq-trl stand-in?")
        reached = "reached" if state["success"] else "not reached"
        return Verdict(bool(state["success"]), f"simulator: goal {reached} (screen: {state['screen']})")


def attach_simulator(env: AndroidDeviceEnv) -> AndroidDeviceEnv:
    """``env`` with a :class:`LoopbackSimulator` as its ``prepare`` hook and judge."""
    simulator = LoopbackSimulator(env)
    env.prepare, env.judge = simulator.prepare, simulator
    return env


def serve(argv: Sequence[str] | None = None) -> None:
    """Command line: serve stand-in phones behind an adb server stand-in until ``--lifetime`` ends."""
    parser = argparse.ArgumentParser(prog="python -m digiq_trl.envs.loopback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=5038, help="port of the adb server stand-in on 127.0.0.1")
    parser.add_argument("--serials", default="emulator-5554", help="comma-separated serials of the stand-in phones")
    parser.add_argument("--suite", default="general")
    parser.add_argument("--split", default="test")
    parser.add_argument("--phone", default="source", help="source or target (see PhoneEnv)")
    parser.add_argument("--layout", default="fixed")
    parser.add_argument("--scale", type=int, default=10, help="screen size as a multiple of 112x224")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="seconds before the server stops by itself")
    args = parser.parse_args(argv)
    phones = {serial: StandInPhone(args.scale, suite=args.suite, split=args.split, phone=args.phone,
                                   layout=args.layout) for serial in args.serials.split(",")}
    server = AdbServerStandIn(phones, port=args.port, lifetime_s=args.lifetime).start()
    print(json.dumps({"adb_server": f"127.0.0.1:{server.port}", "serials": list(phones),
                      "lifetime_s": args.lifetime}), flush=True)
    try:
        server.timer.join()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    serve()
