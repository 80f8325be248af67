"""The one table of Control fields, tested once: every field goes from the wire to the
task, to its stored document, to the media worker's spec and back to the wire intact."""

from __future__ import annotations

from dataclasses import fields

import pytest

from relaystream.api.control import (
    UPDATABLE_WIRE_NAMES,
    WIRE_NAMES,
    control_from_wire,
    control_to_wire,
    merged_control,
)
from relaystream.api.errors import ApiError
from relaystream.api.models import StartControl
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.tasks.control import CONTROL_FIELDS, RelayControl
from relaystream.tasks.model import RelayTask, TaskKey, from_record, to_record
from relaystream.tasks.runner import SourcePolicy, pipeline_spec

# Every field set, and none at its default, so that a field dropped anywhere shows.
WIRE_CONTROL = {
    "StreamUrl": "rtmp://live.example.com/app/stream",
    "MediaType": 2,
    "StreamMode": 0,
    "StartTimeStamp": 1_900_000_000,
    "Loop": True,
    "VideoWidth": 640,
    "VideoHeight": 360,
    "FrameRate": 24,
    "Bitrate": 900,
}


def test_the_table_names_every_field_on_every_side() -> None:
    names = {f.name for f in CONTROL_FIELDS}
    assert names == {f.name for f in fields(RelayControl)}
    assert set(WIRE_NAMES) == names
    assert set(WIRE_NAMES.values()) == set(StartControl.model_fields)
    spec_fields = {f.name for f in fields(PipelineSpec)}
    assert {f.spec_name for f in CONTROL_FIELDS if f.spec_name} <= spec_fields
    # SPEC: an Update may change all but StartTimeStamp (and Loop, which it does not list).
    assert set(WIRE_CONTROL) - {"StartTimeStamp", "Loop"} == UPDATABLE_WIRE_NAMES


def test_a_control_keeps_every_field_from_the_wire_to_the_worker_and_back() -> None:
    control = control_from_wire(StartControl.model_validate(WIRE_CONTROL))

    assert control == RelayControl(
        stream_url="rtmp://live.example.com/app/stream",
        media_type=MediaType.VIDEO_ONLY,
        stream_mode=StreamMode.TRANSCODE,
        start_timestamp_s=1_900_000_000,
        loop=True,
        video_width=640,
        video_height=360,
        frame_rate=24,
        bitrate_kbps=900,
    )
    task = RelayTask(key=TaskKey("a" * 24, "room", "task"), user_id="u", token="t", control=control)
    assert from_record(to_record(task)).control == control

    spec = pipeline_spec(task, SourcePolicy(allow_private=True))
    assert (spec.url, spec.media_type, spec.stream_mode) == (
        "rtmp://live.example.com/app/stream",
        MediaType.VIDEO_ONLY,
        StreamMode.TRANSCODE,
    )
    assert (spec.video_width, spec.video_height, spec.frame_rate, spec.bitrate_kbps) == (
        640,
        360,
        24,
        900,
    )
    assert spec.allow_private_sources
    assert PipelineSpec.from_json_dict(spec.to_json_dict()) == spec

    assert control_to_wire(control) == WIRE_CONTROL


def test_unset_sizes_and_bitrate_show_as_zero() -> None:
    control = RelayControl(stream_url="rtmp://h/a/s", stream_mode=StreamMode.REMUX)

    wire = control_to_wire(control)

    assert (wire["VideoWidth"], wire["VideoHeight"], wire["Bitrate"]) == (0, 0, 0)
    assert wire["FrameRate"] == 15


def test_a_merge_replaces_given_fields_and_keeps_the_rest() -> None:
    stored = control_from_wire(StartControl.model_validate(WIRE_CONTROL))

    merged = merged_control(
        stored,
        {"StreamUrl": "https://cdn.example.com/b.flv", "VideoWidth": 1281, "StartTimeStamp": 5},
    )

    assert merged.stream_url == "https://cdn.example.com/b.flv"
    assert merged.video_width == 1280  # rounded to even, as at Start
    assert merged.start_timestamp_s == 1_900_000_000  # not something an Update changes
    assert (merged.video_height, merged.frame_rate, merged.bitrate_kbps) == (360, 24, 900)


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"VideoWidth": 4000}, "InvalidParameter", "Control.VideoWidth"),
        ({"StreamUrl": "file:///etc/passwd"}, "InvalidParameter", "Control.StreamUrl"),
        ({"MediaType": "1"}, "InvalidParameter", "Control.MediaType"),
        ({"StreamUrl": None}, "InvalidParameter", "Control.StreamUrl"),
    ],
)
def test_a_merge_that_breaks_the_control_names_the_field(
    changes: dict[str, object], code: str, field: str
) -> None:
    stored = control_from_wire(StartControl.model_validate(WIRE_CONTROL))

    with pytest.raises(ApiError) as refused:
        merged_control(stored, changes)

    assert refused.value.code == code
    assert field in refused.value.message


def test_switching_a_remux_to_transcode_needs_a_size() -> None:
    remux = RelayControl(stream_url="rtmp://h/a/s", stream_mode=StreamMode.REMUX)

    with pytest.raises(ApiError) as refused:
        merged_control(remux, {"StreamMode": 0})

    assert refused.value.code == "MissingParameter"
    assert "Control.VideoWidth" in refused.value.message
    audio_only = merged_control(remux, {"StreamMode": 0, "MediaType": 1})
    assert audio_only.stream_mode is StreamMode.TRANSCODE
