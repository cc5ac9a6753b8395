"""TensorBoard event files read back record by record (TFRecord framing, tensorboardX's Event protos),
the way TensorBoard reads them."""

import struct
from collections import defaultdict
from pathlib import Path


def read_events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], set[str]]:
    """Scalars by tag as (step, value), and the image tags, from every event file under `folder`."""
    from tensorboardX.proto import event_pb2

    scalars, images = defaultdict(list), set()
    files = sorted(folder.rglob("events.out.tfevents*"))
    assert files, f"no event files under {folder}"
    for path in files:
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                if value.HasField("image"):
                    images.add(value.tag)
                else:
                    scalars[value.tag].append((event.step, value.simple_value))
    return scalars, images
