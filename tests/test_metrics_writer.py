"""metrics.jsonl keeps the metric keys; TensorBoard gets readable tags.

The event files are read back record by record (length, CRC, Event proto,
with tensorboardX's own proto classes), so the test sees exactly the tags
and values TensorBoard would.
"""

import glob
import json
import os
import struct

from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from astrom3_jax.training import metrics_writer


def read_events(workdir):
    """(step, tag, value) of every summary value in the run's event files;
    value is the float of a scalar or the decoded string of a text."""
    out = []
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "*tfevents*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            assert header_crc == masked_crc32c(header), path
            body = data[pos + 12 : pos + 12 + length]
            (body_crc,) = struct.unpack(
                "<I", data[pos + 12 + length : pos + 16 + length]
            )
            assert body_crc == masked_crc32c(body), path
            pos += 16 + length
            event = event_pb2.Event.FromString(body)
            for value in event.summary.value:
                if value.HasField("tensor"):
                    got = value.tensor.string_val[0].decode()
                else:
                    got = value.simple_value
                out.append((event.step, value.tag, got))
    return out


METRICS = {
    "epoch": 3,
    "train_loss": 2.5,
    "val_loss/photometry-spectra": 1.25,
    "val_full_recall@1/metadata->photometry": 0.5,
    "val_recall@5/spectra->metadata": 0.75,
    "val_accuracy": float("nan"),
}


def test_tags_keep_their_meaning_and_the_jsonl_keeps_the_keys(tmp_path):
    writer = metrics_writer.MetricsWriter(str(tmp_path))
    writer.write(40, METRICS)
    writer.close()
    # NaN is left out of TensorBoard and written as null to the JSON lines.
    assert sorted(read_events(tmp_path)) == [
        (40, "epoch", 3.0),
        (40, "train_loss", 2.5),
        (40, "val_full_recall_at_1/metadata_to_photometry", 0.5),
        (40, "val_loss/photometry-spectra", 1.25),
        (40, "val_recall_at_5/spectra_to_metadata", 0.75),
    ]
    assert metrics_writer.read_metrics(str(tmp_path)) == [
        {**METRICS, "val_accuracy": None, "step": 40}
    ]


def test_config_is_logged_once_as_a_code_block(tmp_path):
    config = json.dumps({"learning_rate": 0.00392, "modalities": ["a", "b"]}, indent=2)
    writer = metrics_writer.MetricsWriter(str(tmp_path))
    writer.write_config(config)
    writer.write(7, {"train_loss": 1.0})
    writer.close()
    events = read_events(tmp_path)
    texts = [e for e in events if e[1] == "config/text_summary"]
    assert len(texts) == 1 and texts[0][0] == 0
    lines = texts[0][2].split("\n")
    assert lines[0] == "    {" and lines[1] == '      "learning_rate": 0.00392,'
    assert all(line.startswith("    ") for line in lines)
    assert json.loads("\n".join(line[4:] for line in lines)) == json.loads(config)
    assert (7, "train_loss", 1.0) in events


def test_tensorboard_tag_spelling():
    tag = metrics_writer.tensorboard_tag
    assert tag("recall@10/photometry->spectra") == "recall_at_10/photometry_to_spectra"
    assert tag("loss/photometry-metadata") == "loss/photometry-metadata"
    assert tag("lr") == "lr"
    assert tag("epoch_time_s") == "epoch_time_s"
    assert tag("/a b:c%") == "a_b_c_"


def test_drop_from_epoch_forgets_redone_epochs_and_cut_lines(tmp_path):
    writer = metrics_writer.MetricsWriter(str(tmp_path), tensorboard=False)
    for epoch in range(4):
        writer.write(10 * epoch, {"epoch": epoch, "val_loss": 1.0 / (epoch + 1)})
    with open(tmp_path / metrics_writer.METRICS_FILE, "a") as f:
        f.write('{"epoch": 4, "val_lo')  # killed mid-write
    writer.drop_from_epoch(2)
    writer.close()
    assert metrics_writer.read_metrics(str(tmp_path)) == [
        {"epoch": 0, "val_loss": 1.0, "step": 0},
        {"epoch": 1, "val_loss": 0.5, "step": 10},
    ]
