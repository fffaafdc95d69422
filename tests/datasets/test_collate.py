import pytest
import torch

from minigpt.datasets.collate import collate_samples


def _sample(i, image=True, **extra):
    return {
        "image": torch.full((3, 4, 4), float(i)) if image else None,
        "instruction_input": f"q{i}",
        "answer": f"a{i}",
        "sample_id": f"ds:{i}",
        **extra,
    }


def test_images_stacked_and_other_keys_listed():
    batch = collate_samples([_sample(0, gt_box=[1, 2, 3, 4]), _sample(1, gt_box=[5, 6, 7, 8])])
    assert batch["image"].shape == (2, 3, 4, 4)
    assert batch["image"][1].eq(1).all() and batch["image"][0].eq(0).all()
    assert batch["instruction_input"] == ["q0", "q1"]
    assert batch["answer"] == ["a0", "a1"]
    assert batch["gt_box"] == [[1, 2, 3, 4], [5, 6, 7, 8]]  # boxes stay lists, not tensors


def test_multi_turn_lists_are_kept_per_sample():
    a = {"image": None, "instruction_input": ["t1", "t2"], "answer": ["r1", "r2"]}
    b = {"image": None, "instruction_input": ["u1"], "answer": ["s1"]}
    batch = collate_samples([a, b])
    assert batch["instruction_input"] == [["t1", "t2"], ["u1"]]
    assert batch["answer"] == [["r1", "r2"], ["s1"]]


def test_all_text_only_gives_none_image():
    batch = collate_samples([_sample(0, image=False), _sample(1, image=False)])
    assert batch["image"] is None
    assert batch["sample_id"] == ["ds:0", "ds:1"]


def test_image_and_text_only_samples_mix_as_a_per_sample_list():
    batch = collate_samples([_sample(0), _sample(1, image=False)])
    assert isinstance(batch["image"], list) and batch["image"][1] is None
    assert batch["image"][0].eq(0).all()


def test_several_images_in_one_sample_stay_a_list():
    two = _sample(2)
    two["image"] = [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]
    batch = collate_samples([_sample(0), two, _sample(1, image=False)])
    assert len(batch["image"][1]) == 2 and batch["image"][1][1].eq(1).all()
    odd = _sample(3)
    odd["image"] = [torch.zeros(3, 8, 8)]
    with pytest.raises(ValueError, match=r"shapes differ.*\[3, 8, 8\]: ds:3"):
        collate_samples([two, odd])


def test_mixing_tensors_and_other_values_outside_media_columns_is_a_clear_error():
    a, b = _sample(0, extra=torch.zeros(2)), _sample(1, extra="x")
    with pytest.raises(ValueError, match=r"'extra'.*ds:0.*ds:1"):
        collate_samples([a, b])


def test_shape_mismatch_names_samples():
    odd = _sample(1)
    odd["image"] = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match=r"shapes differ.*\[3, 8, 8\]: ds:1"):
        collate_samples([_sample(0), odd])


def test_keys_missing_in_some_samples_become_none():
    batch = collate_samples([_sample(0, question_type="what color"), _sample(1)])
    assert batch["question_type"] == ["what color", None]


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])


def test_images_and_videos_of_one_frame_size_mix_as_a_per_sample_list():
    image, video = _sample(0), _sample(1)
    video["image"] = torch.zeros(4, 3, 4, 4)  # [T, 3, H, W] frames of the images' size
    batch = collate_samples([image, video])
    assert isinstance(batch["image"], list)
    assert [tuple(t.shape) for t in batch["image"]] == [(3, 4, 4), (4, 3, 4, 4)]
    video2 = dict(video)
    assert collate_samples([video, video2])["image"].shape == (2, 4, 3, 4, 4)  # videos alone stack
    video2["image"] = torch.zeros(4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"shapes differ.*\[3, 16, 16\]: ds:1"):
        collate_samples([image, video2])


def test_join_batches_keeps_a_mixed_media_column_per_sample_and_refuses_cached_image_batches():
    from minigpt.datasets.collate import join_batches

    images = collate_samples([{"image": torch.zeros(3, 4, 4), "answer": "a"}] * 2)
    text = collate_samples([{"image": None, "answer": "b"}])
    joined = join_batches([images, text])
    assert [None if x is None else tuple(x.shape) for x in joined["image"]] == [(3, 4, 4), (3, 4, 4), None]
    assert joined["answer"] == ["a", "a", "b"]
    cached = {"image": None, "image_key": ["k"], "image_pixels": None, "image_pixel_rows": [], "answer": ["c"]}
    with pytest.raises(ValueError, match="vision feature cache cannot be joined"):
        join_batches([images, cached])
