"""vision-pose and hub datasets: no common keypoint layout to map, so a hub id gets a one-line pointer to
the COCO keypoints format instead of "not found"; paths keep their own message."""

import pytest
from lora_shared.errors import DataError, UsageError
from vision_pose.config import PoseDataArgs
from vision_pose.data import load_splits


def test_hub_id_is_refused_with_what_to_bring():
    with pytest.raises(
        UsageError, match=r"^--dataset someone/keypoints: vision-pose reads COCO keypoints files"
    ):
        load_splits(PoseDataArgs(dataset="someone/keypoints"))


def test_missing_file_keeps_the_not_found_message():
    with pytest.raises(DataError, match=r"^missing\.json: not found \(expected figures"):
        load_splits(PoseDataArgs(dataset="missing.json"))
