"""Original Android-in-the-Wild (AitW) TFRecord shards -> canonical transitions, without TensorFlow.

AitW ships gzip-compressed TFRecord files; each record is a serialized ``tf.train.Example`` holding
one step of one human demonstration. Reading them needs two small pieces, neither of them
TensorFlow:

* **TFRecord framing**: each record is ``uint64 length | uint32 masked crc32c(length) | data |
  uint32 masked crc32c(data)`` (little endian). Both checksums are verified (``google-crc32c``, a
  C implementation: the screenshots make records of several MB each).
* **``tf.train.Example``**: decoded by the ``protobuf`` runtime from a descriptor of its six
  messages (``Example``, ``Features``, ``Feature``, ``BytesList``, ``FloatList``, ``Int64List``)
  built here in a private pool, so there is no generated code to go stale and no clash with a
  TensorFlow install.

Mapping (fields as in AitW's README): steps are grouped by ``episode_id`` and sorted by ``step_id``;
an episode is complete when it has ``episode_length`` steps, numbered ``0 .. episode_length - 1``
(episodes may interleave within and across shards; one that is still incomplete after the last
input is an error). ``image/encoded`` is
raw ``uint8`` pixels of shape ``(image/height, image/width, image/channels)``, stored as PNG
(:func:`encode_png`); ``results/action_type`` (AitW ids), ``results/yx_touch``, ``results/yx_lift``
and ``results/type_action`` give the action; ``image/ui_annotations_positions`` the ``ui_boxes``;
``goal_info`` the goal. Demonstrations succeed: reward 1 on the last step, 0 before it.
"""

from __future__ import annotations

import functools
import gzip
import queue
import struct
import threading
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import numpy as np
from datasets import Dataset
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ..actions import ActionType, DeviceAction
from ..discount import DEFAULT_GAMMA
from .conversion import (
    ConversionError,
    EpisodeStep,
    check_conversion_gamma,
    check_input_files,
    episode_rows,
    generate_transitions,
)
from .schema import transition_features
from .validation import MAX_IMAGE_PIXELS


PNG_ZLIB_LEVEL = 1
"""zlib level of the stored screenshots. Encoding is most of the conversion time; see encode_png."""

MAX_RECORD_BYTES = 1 << 28
"""Largest TFRecord record read (256 MiB). An AitW record (one raw screenshot) is a few MB; a length
field beyond this is corruption, refused before a buffer of that size is allocated."""

_CRC_MASK_DELTA = 0xA282EAD8
_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


class TFRecordError(ConversionError):
    """A TFRecord file is truncated or corrupted; the message names the file, record and offset."""


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 bits plus a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _open(path: Path) -> BinaryIO:
    """Open a TFRecord file, through gzip when it starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _read(stream: BinaryIO, size: int, path: Path, index: int, offset: int) -> bytes:
    """Up to ``size`` bytes; a gzip stream cut short or corrupt is a :class:`TFRecordError`."""
    try:
        return stream.read(size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise TFRecordError(
            f"{path}: record {index} (byte {offset}): the gzip stream is truncated or corrupt "
            f"({error})"
        ) from None


def _read_exact(
    stream: BinaryIO, size: int, path: Path, index: int, offset: int, what: str
) -> bytes:
    data = _read(stream, size, path, index, offset)
    if len(data) != size:
        raise TFRecordError(
            f"{path}: record {index} (byte {offset}): truncated {what}, "
            f"expected {size} bytes, got {len(data)}"
        )
    return data


def read_tfrecord(path: str | Path) -> Iterator[bytes]:
    """Yield the records of a TFRecord file (gzip-compressed or not), checking both checksums.

    Raises:
        TFRecordError: a record is truncated, longer than :data:`MAX_RECORD_BYTES`, or a checksum
            does not match; the gzip stream is truncated or corrupt.
    """
    path = Path(path)
    with _open(path) as stream:
        offset, index = 0, 0
        while header := _read(stream, 12, path, index, offset):
            header += _read_exact(stream, 12 - len(header), path, index, offset, "header")
            (length,), (length_crc,) = (
                struct.unpack("<Q", header[:8]),
                struct.unpack("<I", header[8:]),
            )
            if _masked_crc(header[:8]) != length_crc:
                raise TFRecordError(f"{path}: record {index} (byte {offset}): bad length checksum")
            if length > MAX_RECORD_BYTES:
                raise TFRecordError(
                    f"{path}: record {index} (byte {offset}): length field says {length} bytes, "
                    f"more than MAX_RECORD_BYTES ({MAX_RECORD_BYTES}); the file is corrupt"
                )
            data = _read_exact(stream, length, path, index, offset, "data")
            (data_crc,) = struct.unpack("<I", _read_exact(stream, 4, path, index, offset, "footer"))
            if _masked_crc(data) != data_crc:
                raise TFRecordError(f"{path}: record {index} (byte {offset}): bad data checksum")
            yield data
            offset, index = offset + 16 + length, index + 1


_END = object()


def _prefetched(records: Generator[bytes, None, None], depth: int = 4) -> Iterator[bytes]:
    """Yield ``records`` while a thread reads up to ``depth`` ahead.

    Reading (gunzip, checksums) and PNG encoding both run in C with the GIL released, so on two
    cores they overlap. Errors of the reader are raised here; closing this generator stops it.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for record in records:
                if not put(record):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)
        finally:
            records.close()

    thread = threading.Thread(target=read, name="tfrecord-reader", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def write_tfrecord(path: str | Path, records: Iterable[bytes], compress: bool = True) -> None:
    """Write ``records`` as a TFRecord file (gzip-compressed by default, like AitW's shards)."""
    with gzip.open(path, "wb", compresslevel=6) if compress else open(path, "wb") as stream:
        for data in records:
            length = struct.pack("<Q", len(data))
            stream.write(length + struct.pack("<I", _masked_crc(length)))
            stream.write(data)
            stream.write(struct.pack("<I", _masked_crc(data)))


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    type_name: str = "",
    repeated: bool = False,
) -> None:
    label = descriptor_pb2.FieldDescriptorProto
    field = message.field.add(
        name=name,
        number=number,
        type=kind,
        label=label.LABEL_REPEATED if repeated else label.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name


@functools.cache
def example_message_class() -> type[Message]:
    """The ``tensorflow.Example`` message class, from a descriptor (wire-compatible with TF)."""
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="digiq_trl/tf_example.proto", package="tensorflow", syntax="proto3"
    )
    for name, kind in (
        ("BytesList", proto.TYPE_BYTES),
        ("FloatList", proto.TYPE_FLOAT),
        ("Int64List", proto.TYPE_INT64),
    ):
        _field(file.message_type.add(name=name), "value", 1, kind, repeated=True)
    feature = file.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        list_type = ".tensorflow." + name.title().replace("_", "")
        _field(feature, name, number, proto.TYPE_MESSAGE, list_type)
        feature.field[-1].oneof_index = 0
    features = file.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, proto.TYPE_STRING)
    _field(entry, "value", 2, proto.TYPE_MESSAGE, ".tensorflow.Feature")
    _field(features, "feature", 1, proto.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", True)
    _field(
        file.message_type.add(name="Example"),
        "features",
        1,
        proto.TYPE_MESSAGE,
        ".tensorflow.Features",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def encode_example(features: Mapping[str, Sequence[Any]]) -> bytes:
    """Serialize a ``tf.train.Example`` from ``{name: values}``.

    The list kind follows the values: ``bytes``/``str`` -> bytes_list, ``int`` -> int64_list,
    ``float`` -> float_list (an empty list is written as a float_list).
    """
    example = example_message_class()()
    for name, values in features.items():
        feature = example.features.feature[name]
        values = list(values)
        if values and isinstance(values[0], (bytes, str)):
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
        elif values and isinstance(values[0], int):
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example.SerializeToString()


class _Record:
    """Typed access to the features of one AitW record; errors name file, record and field."""

    def __init__(self, data: bytes, path: Path, index: int) -> None:
        self.where = f"{path}, record {index}"
        try:
            self.features = example_message_class().FromString(data).features.feature
        except DecodeError as error:
            raise ConversionError(f"{self.where}: not a tf.train.Example ({error})") from None

    def values(self, name: str, kind: str) -> Sequence[Any]:
        """All values of ``name`` (``kind``: bytes_list, float_list or int64_list)."""
        if name not in self.features:
            raise ConversionError(f"{self.where}, field {name!r}: missing")
        feature = self.features[name]
        stored = feature.WhichOneof("kind")
        if stored not in (kind, None) and len(getattr(feature, stored).value):
            raise ConversionError(f"{self.where}, field {name!r}: expected {kind}, found {stored}")
        return getattr(feature, kind).value

    def one(self, name: str, kind: str) -> Any:
        """The single value of ``name``."""
        values = self.values(name, kind)
        if len(values) != 1:
            raise ConversionError(
                f"{self.where}, field {name!r}: expected 1 value, got {len(values)}"
            )
        return values[0]

    def text(self, name: str) -> str:
        """The single value of ``name`` decoded as UTF-8."""
        raw = self.one(name, "bytes_list")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{self.where}, field {name!r}: not UTF-8 text") from None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of ``uint8`` pixels of shape ``(height, width, channels)`` (1, 3 or 4 channels).

    Every row uses PNG's "Up" filter (difference with the row above, computed by numpy) and zlib
    level :data:`PNG_ZLIB_LEVEL`: on phone screenshots, whose rows repeat a lot, this is ~2.3x
    faster than PIL's adaptive per-row filter choice, for files ~5 % larger. Any PNG reader
    decodes it.
    """
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered, PNG_ZLIB_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png(record: _Record, max_pixels: int) -> bytes:
    """The raw ``image/encoded`` pixels of ``record`` as PNG bytes (1 to ``max_pixels`` pixels)."""
    height, width = (
        record.one("image/height", "int64_list"),
        record.one("image/width", "int64_list"),
    )
    for name, size in (("image/height", height), ("image/width", width)):
        if size <= 0:
            raise ConversionError(f"{record.where}, field {name!r}: {size} is not a positive size")
    if height * width > max_pixels:
        raise ConversionError(
            f"{record.where}, fields 'image/height'/'image/width': a {width}x{height} image, more "
            f"than {max_pixels} pixels (max_image_pixels)"
        )
    channels = record.one("image/channels", "int64_list")
    raw = record.one("image/encoded", "bytes_list")
    if channels not in _PNG_COLOR_TYPES or len(raw) != height * width * channels:
        raise ConversionError(
            f"{record.where}, field 'image/encoded': {len(raw)} bytes do not form a "
            f"{height}x{width}x{channels} uint8 image (channels must be 1, 3 or 4)"
        )
    return encode_png(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, channels))


def _action(record: _Record) -> DeviceAction:
    """The step's action from ``results/*``; unknown ids and points outside [0, 1] are errors."""
    type_id = record.one("results/action_type", "int64_list")
    if type_id not in ActionType._value2member_map_:
        raise ConversionError(
            f"{record.where}, field 'results/action_type': unknown AitW id {type_id}"
        )
    action_type = ActionType(type_id)
    if action_type == ActionType.DUAL_POINT:
        touch, lift = (
            record.values("results/yx_touch", "float_list"),
            record.values("results/yx_lift", "float_list"),
        )
        action = DeviceAction(action_type, tuple(touch), tuple(lift))
        if not action.is_valid:
            raise ConversionError(
                f"{record.where}, fields 'results/yx_touch'/'results/yx_lift': points "
                f"{list(touch)} -> {list(lift)} are not normalized (y, x) in [0, 1]"
            )
        return action
    if action_type == ActionType.TYPE:
        return DeviceAction.type_text(record.text("results/type_action"))
    return DeviceAction.press(action_type)


def _ui_boxes(record: _Record) -> list[list[float]]:
    flat = list(record.values("image/ui_annotations_positions", "float_list"))
    if len(flat) % 4:
        raise ConversionError(
            f"{record.where}, field 'image/ui_annotations_positions': {len(flat)} values are not "
            "a multiple of 4 (y, x, height, width)"
        )
    return [flat[i : i + 4] for i in range(0, len(flat), 4)]


class _Episode:
    """The steps of one episode seen so far (screenshots already PNG-encoded)."""

    def __init__(self, goal: str, length: int) -> None:
        self.goal, self.length = goal, length
        self.steps: dict[int, EpisodeStep] = {}

    def check_step(self, record: _Record, step_id: int) -> None:
        """Refuse a record whose ``episode_length`` or ``step_id`` does not fit this episode."""
        length = record.one("episode_length", "int64_list")
        if length != self.length:
            raise ConversionError(
                f"{record.where}, field 'episode_length': {length}, but earlier steps of the "
                f"episode say {self.length}"
            )
        if not 0 <= step_id < self.length:
            raise ConversionError(
                f"{record.where}, field 'step_id': {step_id} is outside 0 .. {self.length - 1} "
                f"(episode_length {self.length})"
            )
        if step_id in self.steps:
            raise ConversionError(f"{record.where}, field 'step_id': duplicate step {step_id}")

    def complete_steps(self) -> list[EpisodeStep]:
        """The steps in ``step_id`` order, the last one rewarded 1 (a successful demonstration)."""
        steps = [self.steps[step_id] for step_id in sorted(self.steps)]
        steps[-1].reward = 1.0
        return steps


def _new_episode(record: _Record) -> _Episode:
    length = record.one("episode_length", "int64_list")
    if length < 1:
        raise ConversionError(
            f"{record.where}, field 'episode_length': {length} is not a positive number of steps"
        )
    return _Episode(record.text("goal_info"), length)


def _add_record(
    record: _Record, pending: dict[str, _Episode], finished: set[str], max_pixels: int
) -> str:
    """Decode ``record`` into ``pending``; return its episode id."""
    episode_id = record.text("episode_id")
    step_id = record.one("step_id", "int64_list")
    record.where += f" (episode {episode_id!r}, step {step_id})"
    if episode_id in finished:
        raise ConversionError(
            f"{record.where}, field 'step_id': the episode already had all its steps"
        )
    if episode_id not in pending:
        pending[episode_id] = _new_episode(record)
    episode = pending[episode_id]
    episode.check_step(record, step_id)
    episode.steps[step_id] = EpisodeStep(
        _png(record, max_pixels), _action(record), 0.0, ui_boxes=_ui_boxes(record)
    )
    return episode_id


def _generate_rows(paths: Sequence[str], gamma: float, max_pixels: int) -> Iterator[dict[str, Any]]:
    """Rows of every episode of ``paths``, each episode emitted as soon as it is complete."""
    features = transition_features(with_ui_boxes=True)
    pending: dict[str, _Episode] = {}
    finished: set[str] = set()
    for path in map(Path, paths):
        index = -1
        for index, data in enumerate(_prefetched(read_tfrecord(path))):
            episode_id = _add_record(_Record(data, path, index), pending, finished, max_pixels)
            episode = pending[episode_id]
            if len(episode.steps) >= episode.length:
                del pending[episode_id]
                finished.add(episode_id)
                yield from episode_rows(
                    episode_id, episode.goal, episode.complete_steps(), gamma, features
                )
        if index < 0:
            raise ConversionError(f"{path}: holds no records (an empty TFRecord file)")
    if pending:
        incomplete = {
            eid: f"{len(e.steps)}/{e.length} steps" for eid, e in list(pending.items())[:5]
        }
        raise ConversionError(
            f"{', '.join(paths)}: {len(pending)} episode(s) end before 'episode_length' steps were "
            f"seen, e.g. {incomplete}; pass every shard that holds their steps"
        )


def convert_aitw_tfrecord(
    paths: Sequence[str | Path],
    gamma: float = DEFAULT_GAMMA,
    cache_dir: str | Path | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> Dataset:
    """Convert AitW TFRecord shards into a validated transitions dataset (with ``ui_boxes``).

    Args:
        paths: TFRecord files, gzip-compressed (as AitW ships them) or not. An episode may span
            several of them.
        gamma: discount of ``mc_return``, in ``(0, 1]``.
        cache_dir: where the Arrow file is written; the ``datasets`` cache by default.
        max_image_pixels: largest screenshot accepted (width x height).

    Raises:
        ConversionError: an input is missing or empty, a record is corrupted, lacks a field, has
            steps that do not fit its ``episode_length``, an empty or oversized image, or an
            unknown action; the message names the file, record, episode, step and field.

    Example:
        >>> ds = convert_aitw_tfrecord(["general-00000-of-00321"])  # doctest: +SKIP
    """
    paths = check_input_files(paths)
    gamma = check_conversion_gamma(gamma)
    return generate_transitions(
        _generate_rows,
        {"paths": paths, "gamma": gamma, "max_pixels": max_image_pixels},
        transition_features(with_ui_boxes=True),
        source=", ".join(paths),
        cache_dir=cache_dir,
        max_image_pixels=max_image_pixels,
    )
