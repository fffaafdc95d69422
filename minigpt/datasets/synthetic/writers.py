"""Write the synthetic shapes in the on-disk formats of the real datasets.

Each format is the one the real dataset ships in (webdataset shards for CC/SBU/LAION, MiniGPT-4's
``filter_cap.json``, LAVIS's Karpathy COCO and VQA lists, RefCOCO's ``refs(unc).p`` pickle with a
COCO ``instances.json``, LLaVA conversations), so the real readers train on this data unchanged.

Images are rendered, encoded and written in chunks of one webdataset shard each, in worker
processes when ``num_workers > 1``; every image comes from its own random streams, so the bytes
written do not depend on the number of workers. Every file goes to a temporary name first and is
renamed into place, and ``manifest.json`` is written last: a dataset with a manifest is complete.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from PIL import Image

from minigpt.datasets.synthetic.absent import REFER_TURN
from minigpt.datasets.synthetic.easygen_files import write_easygen_files
from minigpt.datasets.synthetic.files import (
    ANN_IDS_PER_IMAGE,
    FILES,
    QUESTION_IDS_PER_IMAGE,
    VQA_ANSWER_REPEATS,
    atomic_write_bytes,
    atomic_write_json,
    shard_name,
)
from minigpt.datasets.synthetic.lavin_files import image_problem, write_lavin_files
from minigpt.datasets.synthetic.pope import POPE_SPLITS, pope_file, write_pope_splits
from minigpt.datasets.synthetic.scenes import KINDS, QUESTION_TYPES, Example, Scene, make_example
from minigpt.datasets.synthetic.tar_writer import TarWriter

GENERATOR_NAME = "minigpt.synthetic_shapes"
# 2: POPE files, the --absent questions; 3: ScienceQA and Alpaca files;
# 4: text-only ScienceQA problems a random tiny LLM can learn (one-token words, answers read off the question);
# 5: yes/no ScienceQA image problems list their choices as "yes", "no"
GENERATOR_VERSION = 5
JPEG_QUALITY = 95

CATEGORY_IDS: Dict[str, int] = {kind: i + 1 for i, kind in enumerate(KINDS)}

PathLike = Union[str, "os.PathLike[str]"]


def encode_jpeg(img: Image.Image) -> bytes:
    """JPEG at quality 95 with no chroma subsampling, which keeps small shapes' colours crisp."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


# -- the rows one image contributes to each annotation file -------------------------------------
def _image_id_str(split: str, index: int) -> str:
    return f"synthetic_{split}_{index:06d}"


def _dumps(obj: Any) -> str:
    # Default arguments on purpose: json.dumps then reuses one cached encoder (this runs ~15x an image).
    return json.dumps(obj)


def _rows_for_example(ex: Example, coco_image_id: int) -> Dict[str, Any]:
    """Pre-encoded JSON rows for one example, keyed by output file."""
    split, scene, image = ex.split, ex.scene, ex.image_name
    scene_line = {"image": image, "width": scene.width, "height": scene.height}
    scene_line["objects"] = scene.to_dict()["objects"]
    rows: Dict[str, Any] = {"scenes": [_dumps(scene_line)]}
    if split == "train":
        rows["align"] = [_dumps({"image_id": image[: -len(".jpg")], "caption": ex.caption})]
    caption = ex.caption if split == "train" else [ex.caption]  # Karpathy test lists all references
    rows["coco"] = [_dumps({"image": image, "caption": caption, "image_id": _image_id_str(split, ex.index)})]
    rows["vqa"] = [
        _dumps(
            {
                "question_id": ex.index * QUESTION_IDS_PER_IMAGE + QUESTION_TYPES.index(q["question_type"]),
                "question": q["question"],
                "answer": [q["answer"]] * VQA_ANSWER_REPEATS,
                "image": image,
                "dataset": "synthetic_vqa",
                "question_type": q["question_type"],
            }
        )
        for q in ex.questions
    ]
    turns = []
    for n, qi in enumerate(ex.conversation_order):
        q = ex.questions[qi]
        turns.append({"from": "human", "value": ("<image>\n" if n == 0 else "") + q["question"]})
        turns.append({"from": "gpt", "value": q["answer"]})
    if ex.absent_ref is not None:  # asked about what the picture lacks: a [refer] turn, refused for half
        expression, located = ex.refer_turn()
        turns.append({"from": "human", "value": REFER_TURN.format(expression)})
        turns.append({"from": "gpt", "value": located})
    rows["llava"] = [_dumps({"id": _image_id_str(split, ex.index), "image": image, "conversations": turns})]
    rows["scienceqa"] = [image_problem(ex)]

    rows["inst_images"] = [
        _dumps({"id": coco_image_id, "file_name": image, "height": scene.height, "width": scene.width})
    ]
    rows["inst_anns"], rows["refs"] = [], []
    for k, (obj, ref) in enumerate(zip(scene.objects, ex.refs())):
        x1, y1, x2, y2 = obj["box"]
        w, h = x2 - x1, y2 - y1
        area = {"circle": math.pi * w * h / 4.0, "square": float(w * h), "triangle": w * h / 2.0}[obj["kind"]]
        ann_id = coco_image_id * ANN_IDS_PER_IMAGE + k
        category_id = CATEGORY_IDS[obj["kind"]]
        rows["inst_anns"].append(
            _dumps(
                {
                    "id": ann_id,
                    "image_id": coco_image_id,
                    "bbox": [x1, y1, w, h],
                    "area": round(area, 2),
                    "category_id": category_id,
                    "iscrowd": 0,
                }
            )
        )
        sent = ref["expression"]
        rows["refs"].append(
            _dumps(
                {
                    "ref_id": ann_id,
                    "ann_id": ann_id,
                    "image_id": coco_image_id,
                    "split": "train" if split == "train" else "val",  # RefCOCO has no "test" split name
                    "category_id": category_id,
                    "file_name": image,
                    "sentences": [{"sent": sent, "raw": sent, "tokens": sent.split(), "sent_id": ann_id}],
                    "sent_ids": [ann_id],
                }
            )
        )
    return rows


_ROW_KEYS = ("scenes", "align", "coco", "vqa", "llava", "inst_images", "inst_anns", "refs", "scienceqa")


# -- one chunk (= one webdataset shard) ----------------------------------------------------------
class _Job(NamedTuple):
    split: str
    seed: int
    image_size: int
    start: int
    end: int
    shard: int
    coco_image_id_offset: int  # RefCOCO image ids run over train then test
    root: str
    absent: bool = False  # also ask about what the pictures lack (make_example)


def _generate_chunk(job: _Job) -> Dict[str, List[Any]]:
    """Render images ``start..end-1`` of ``split``, write them and their shard; return their rows."""
    root = Path(job.root)
    rows: Dict[str, List[Any]] = {k: [] for k in _ROW_KEYS}
    shard_path = root / shard_name(job.split, job.shard)
    shard_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_shard = shard_path.with_name(f".{shard_path.name}.tmp{os.getpid()}")
    with open(tmp_shard, "wb") as f:
        tar = TarWriter(f)
        for index in range(job.start, job.end):
            ex = make_example(job.seed, job.split, index, job.image_size, render=True, absent=job.absent)
            jpeg = encode_jpeg(ex.image)
            atomic_write_bytes(root / "images" / ex.image_name, jpeg, mkdir=False)
            key = f"{index:09d}"
            meta = {"caption": ex.caption, "key": key, "width": ex.scene.width, "height": ex.scene.height}
            tar.add(f"{key}.jpg", jpeg)
            tar.add(f"{key}.txt", ex.caption.encode("utf-8"))
            tar.add(f"{key}.json", _dumps(meta).encode("utf-8"))
            for k, v in _rows_for_example(ex, job.coco_image_id_offset + index).items():
                rows[k].extend(v)
        tar.close()
    os.replace(tmp_shard, shard_path)
    return rows


def _jobs(
    root: Path, seed: int, image_size: int, split: str, n: int, shard_size: int, offset: int, absent: bool = False
) -> List[_Job]:
    return [
        _Job(split, seed, image_size, start, min(start + shard_size, n), shard, offset, str(root), absent)
        for shard, start in enumerate(range(0, n, shard_size))
    ]


def _run_jobs(jobs: Sequence[_Job], num_workers: int, progress_bar: Any) -> Dict[str, Dict[str, List[Any]]]:
    out = {split: {k: [] for k in _ROW_KEYS} for split in ("train", "test")}

    def consume(results: Iterable[Dict[str, List[Any]]]) -> None:
        for job, rows in zip(jobs, results):
            for k, v in rows.items():
                out[job.split][k].extend(v)
            if progress_bar is not None:
                progress_bar.update(job.end - job.start)

    if num_workers > 1 and len(jobs) > 1:
        # fork starts workers instantly and needs no __main__ guard in the caller's script; the
        # workers only touch PIL and numpy, so the parent's threads (if any) do not matter.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(num_workers, len(jobs))) as pool:
            consume(pool.imap(_generate_chunk, jobs))
    else:
        consume(map(_generate_chunk, jobs))
    return out


def _json_list(rows: List[str]) -> str:
    """The JSON array of pre-encoded rows, as ``json.dumps`` would print the decoded list."""
    return "[" + ", ".join(rows) + "]"


# -- public API ----------------------------------------------------------------------------------
def _read_manifest(root: Path) -> Optional[Dict[str, Any]]:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _settings(
    seed: int, image_size: int, n_train: int, n_test: int, real_layout: bool = False, absent: bool = False,
    easygen: bool = False,
    creation: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """The manifest keys a finished dataset must match to be reused as it is."""
    settings: Dict[str, Any] = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_test": n_test,
    }
    if real_layout:  # only then, so the default manifest stays as it always was
        settings["real_layout"] = True
    if absent:
        settings["absent"] = True
    if easygen:
        settings["easygen"] = True
    if creation:  # drawing requests (draw_prompts.py): only then, as real_layout
        settings["creation"] = {k: int(v) for k, v in sorted(creation.items())}
    return settings


def is_complete(
    root: PathLike, n_train: int, n_test: int, seed: int, image_size: int = 64, real_layout: bool = False,
    absent: bool = False, easygen: bool = False, creation: Optional[Dict[str, int]] = None,
) -> bool:
    """True when ``root`` holds a finished dataset generated with exactly these settings.

    A dataset laid out for the real builders (``real_layout``) or with the image-generation files
    (``easygen``) also serves a plain request.
    """
    root = Path(root)
    m = _read_manifest(root)
    if m is None:
        return False
    wanted = _settings(seed, image_size, n_train, n_test, real_layout, absent, easygen, creation)
    if any(m.get(k) != v for k, v in wanted.items()) or bool(m.get("absent")) != absent:
        return False
    for rel in m.get("files", {}).values():
        for p in rel if isinstance(rel, list) else [rel]:
            if not (root / p).exists():
                return False
    # The manifest is written last, but a user may have deleted images since.
    for split, n in (("train", n_train), ("test", n_test)):
        if n and not (root / "images" / split / f"{n - 1:06d}.jpg").is_file():
            return False
    return True


def _remove_stale_shards(root: Path) -> None:
    """Drop shards a previous, larger run left behind, so a ``train-*.tar`` glob sees only ours."""
    shard_dir = root / "cc_sbu"
    if not shard_dir.is_dir():
        return
    for p in shard_dir.iterdir():
        if re.fullmatch(r"(train|test)-\d{5}\.tar", p.name):
            p.unlink()


def generate_synthetic_dataset(
    root: PathLike,
    n_train: int = 20000,
    n_test: int = 1000,
    seed: int = 0,
    image_size: int = 64,
    shard_size: int = 1000,
    num_workers: int = 0,
    progress: bool = True,
    real_layout: bool = False,
    absent: bool = False,
    easygen: bool = False,
    creation: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """Generate the shapes dataset under ``root`` in every format; returns the manifest.

    The same arguments always give byte-identical files, whatever ``num_workers`` is. With
    ``real_layout`` the data is also laid out where the real builders' default YAMLs look
    (:mod:`minigpt.datasets.synthetic.real_layout`), so ``run.data_root=root`` trains them. With
    ``absent`` every image is also asked about something it lacks (an ``absent`` VQA question, a refused
    ``[refer]`` turn in half the conversations; :mod:`minigpt.datasets.synthetic.absent`). With
    ``easygen`` drawing dialogues (PhotoChat's JSON) and interleaved documents (MMC4's) are written
    too (:mod:`minigpt.datasets.synthetic.easygen_files`). ``creation`` (``{"train": n, "test": m}``;
    off by default) also writes that many drawing requests with their target images
    (:mod:`minigpt.datasets.synthetic.draw_prompts`).
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got n_train={n_train}, n_test={n_test}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Until the new manifest lands, the folder must not look complete.
    (root / "manifest.json").unlink(missing_ok=True)
    _remove_stale_shards(root)
    for split in ("train", "test"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)

    jobs = _jobs(root, seed, image_size, "train", n_train, shard_size, 0, absent)
    jobs += _jobs(root, seed, image_size, "test", n_test, shard_size, n_train, absent)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_train + n_test, desc="synthetic shapes", unit="img")
    try:
        rows = _run_jobs(jobs, num_workers, bar)
    finally:
        if bar is not None:
            bar.close()
    train, test = rows["train"], rows["test"]

    def write_text(key: str, text: str) -> None:
        atomic_write_bytes(root / FILES[key], text.encode("utf-8"))

    for split, r in rows.items():
        write_text(f"scenes_{split}", "".join(line + "\n" for line in r["scenes"]))
        write_text(f"coco_caption_{split}", _json_list(r["coco"]))
        write_text(f"vqa_{split}", _json_list(r["vqa"]))
        write_text(f"llava_{split}", _json_list(r["llava"]))
    write_text("cc_sbu_align", '{"annotations": ' + _json_list(train["align"]) + "}")
    categories = [{"id": cid, "name": kind} for kind, cid in CATEGORY_IDS.items()]
    write_text(
        "refcoco_instances",
        '{"images": '
        + _json_list(train["inst_images"] + test["inst_images"])
        + ', "annotations": '
        + _json_list(train["inst_anns"] + test["inst_anns"])
        + ', "categories": '
        + _dumps(categories)
        + "}",
    )
    # Decoding the rows text gives objects whose sharing, and so whose pickle bytes, do not depend
    # on which process built them.
    refs = json.loads(_json_list(train["refs"] + test["refs"]))
    atomic_write_bytes(root / FILES["refcoco_refs"], pickle.dumps(refs, protocol=4))

    pope_counts = write_pope_splits(root, seed, n_test, image_size) if n_test else {}
    lavin = write_lavin_files(
        root, seed, {"train": train["scienceqa"], "test": test["scienceqa"]}, {"train": n_train, "test": n_test}
    )

    drawing: Dict[str, Any] = {"files": {}, "counts": {}}
    if creation:
        from minigpt.datasets.synthetic.draw_prompts import write_creation_files

        drawing = write_creation_files(root, seed, creation, image_size)

    n_train_shards = sum(1 for j in jobs if j.split == "train")
    n_test_shards = len(jobs) - n_train_shards
    files: Dict[str, Any] = dict(FILES)
    files["cc_sbu_train"] = [shard_name("train", i) for i in range(n_train_shards)]
    files["cc_sbu_test"] = [shard_name("test", i) for i in range(n_test_shards)]
    files.update({f"pope_{split}": pope_file(split) for split in POPE_SPLITS} if n_test else {})
    files.update(lavin["files"])
    if easygen:
        extra = write_easygen_files(root, seed, image_size, {"train": n_train, "test": n_test})
        files.update(extra["files"])
        lavin["counts"].update(extra["counts"])
    files.update(drawing["files"])
    counts: Dict[str, int] = {}
    if real_layout:
        from minigpt.datasets.synthetic.real_layout import write_real_layout  # imports the builders' YAMLs

        laid_out = write_real_layout(
            root, seed, image_size, n_train, n_test, {"train": n_train_shards, "test": n_test_shards}, absent
        )
        files["real_layout"] = laid_out["files"]
        counts = laid_out["counts"]
    manifest: Dict[str, Any] = {
        **_settings(seed, image_size, n_train, n_test, real_layout, absent, easygen, creation),
        "shard_size": shard_size,
        "files": files,
        # Brace patterns as webdataset's WebDataset(urls) expands them.
        "cc_sbu_train_urls": f"cc_sbu/train-{{00000..{n_train_shards - 1:05d}}}.tar",
        "cc_sbu_test_urls": f"cc_sbu/test-{{00000..{n_test_shards - 1:05d}}}.tar" if n_test_shards else "",
        "counts": {
            "images_train": n_train,
            "images_test": n_test,
            "cc_sbu_shards_train": n_train_shards,
            "cc_sbu_shards_test": n_test_shards,
            "cc_sbu_align": len(train["align"]),
            "coco_caption_train": len(train["coco"]),
            "coco_caption_test": len(test["coco"]),
            "vqa_train": len(train["vqa"]),
            "vqa_test": len(test["vqa"]),
            "refcoco_refs": len(refs),
            "llava_train": len(train["llava"]),
            "llava_test": len(test["llava"]),
            **pope_counts,
            **lavin["counts"],
            **drawing["counts"],
            **counts,
        },
    }
    atomic_write_json(root / "manifest.json", manifest, indent=2)
    return manifest


def load_scenes(path: PathLike) -> List[Tuple[str, Scene]]:
    """Read ``scenes_{split}.jsonl`` back into ``(image, Scene)`` pairs."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append((d["image"], Scene.from_dict(d)))
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{lineno}: bad scene line ({e})") from e
    return out
