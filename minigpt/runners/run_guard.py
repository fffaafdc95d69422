"""What keeps two runs, or two configs, from mixing in one ``output_dir``.

* :class:`RunLock`: ``<output_dir>/.run.lock`` holds the pid and host of the run writing there; a
  second run into the folder while that process lives is refused, a lock whose process is gone
  (``kill -9``) is taken over.
* :func:`check_fresh_output`: a fresh run (no ``run.resume_ckpt_path``) into a folder that holds
  another run's checkpoints is refused unless ``run.overwrite_output`` (then they are deleted).
* :func:`run_fingerprint` / :func:`check_resume_matches`: each checkpoint records the config
  (less the keys that may change between a run and its resume, :data:`RESUME_FREE_KEYS`) and the
  datasets' files with their sizes; a resume whose fingerprint differs is refused, naming the
  keys, unless ``run.resume_allow_changes``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Optional

from minigpt.common.config import ConfigError
from minigpt.common.constants import CHECKPOINTS_DIR
from minigpt.common.io import resolve_path, write_atomically

logger = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"
FINGERPRINT_FILE = "fingerprint.json"  # in a step folder: what the resume compares

# Keys a resume may change: how long to run, where outputs go, what is logged and evaluated, how
# the run is resumed, where it runs. Every other key of the composed config must match the checkpoint's.
RESUME_FREE_KEYS = frozenset({
    "run.max_iters", "run.max_epoch", "run.output_dir", "run.stage_name", "run.data_root",
    "run.resume_ckpt_path", "run.resume_allow_changes", "run.overwrite_output",
    "run.progress", "run.progress_label", "run.log_freq", "run.save_freq", "run.keep_last", "run.num_threads",
    "run.tensorboard", "run.wandb_project", "run.sample_every", "run.sample_count",
    "run.eval_every", "run.test_splits", "run.max_eval_samples", "run.batch_size_eval",
    "run.evaluate_only", "run.eval_max_new_tokens", "run.eval_num_beams",
    # where it runs: a resume may move to another device or backend (checkpoints hold full tensors)
    "run.device", "run.dist_backend", "run.distributed", "run.vision_feature_cache.dir",
})
# build_info keys whose values (split -> path or list of paths/globs under run.data_root) are data files
DATA_FILE_KEYS = ("annotations", "shards")


class RunFolderError(ConfigError):
    """An ``output_dir`` this run may not write to as asked (another live run, another run's checkpoints)."""


class ResumeMismatchError(ConfigError):
    """A resume whose config or datasets differ from the checkpoint's."""


# -- the lock ------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """``<output_dir>/.run.lock`` for the life of a run (rank 0 takes it); a context manager."""

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.held = False

    def _holder(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a process that died while creating it

    def acquire(self) -> "RunLock":
        """Create the lock file, taking over a stale one; raise :class:`RunFolderError` while its owner lives."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between: try again
                pid, host = holder.get("pid"), holder.get("host")
                # a process on another host cannot be checked from here: its lock stands
                if pid is not None and (host != me["host"] or _alive(int(pid))):
                    where = f"process {pid} on {host}"
                    raise RunFolderError(
                        f"run.output_dir {os.path.dirname(self.path)} is in use by another run ({where}, lock "
                        f"{self.path}); wait for it to finish or pick another run.output_dir (if that run is gone, "
                        f"delete the lock file)"
                    ) from None
                # its process is gone (killed): the lock is stale; move it out of the way atomically
                stale = f"{self.path}.stale{os.getpid()}"
                try:
                    os.replace(self.path, stale)
                    os.remove(stale)
                except FileNotFoundError:
                    pass
                logger.warning("taking over the stale run lock %s of process %s (no longer running)", self.path, pid)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return self
        raise RunFolderError(f"could not take the run lock {self.path}: other runs keep taking it")

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                os.remove(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- a fresh run into a used folder --------------------------------------------------------------
def _step_folders(output_dir: str) -> List[str]:
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if n.startswith("step_"))


def check_fresh_output(run_cfg) -> bool:
    """Refuse a fresh run into an ``output_dir`` that holds checkpoints; return whether they are to be deleted.

    A resume (``run.resume_ckpt_path`` set) and ``run.evaluate_only`` pass. With
    ``run.overwrite_output`` the caller deletes them (:func:`clear_checkpoints`, rank 0 under the lock).
    """
    if run_cfg.get("evaluate_only") or run_cfg.get("resume_ckpt_path"):
        return False
    out = str(run_cfg.output_dir)
    found = _step_folders(out)
    if not found:
        return False
    if run_cfg.get("overwrite_output"):
        return True
    raise RunFolderError(
        f"run.output_dir {out} already holds checkpoints of another run ({', '.join(found[-3:])}): to continue "
        f"that run pass run.resume_ckpt_path=auto; to start over pick another run.output_dir, or set "
        f"run.overwrite_output=true to delete those checkpoints"
    )


def clear_checkpoints(output_dir: str) -> None:
    """Delete ``<output_dir>/checkpoints`` (``run.overwrite_output``)."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    logger.warning("run.overwrite_output=true: deleting the earlier run's checkpoints in %s", root)
    shutil.rmtree(root, ignore_errors=True)


# -- fingerprints --------------------------------------------------------------------------------
def _flatten(node: Any, prefix: str, out: Dict[str, Any]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = node


def _data_files(cfg) -> Dict[str, Any]:
    """``data:<dataset>.<key>.<split>`` -> {path under data_root: size in bytes (None when missing)}."""
    root = cfg.run_cfg.get("data_root")
    out: Dict[str, Any] = {}
    for name, dcfg in (cfg.datasets_cfg or {}).items():
        info = dcfg.get("build_info") or {}
        for key in DATA_FILE_KEYS:
            for split, paths in (info.get(key) or {}).items():
                files: Dict[str, Optional[int]] = {}
                for pattern in [paths] if isinstance(paths, str) else list(paths or []):
                    full = resolve_path(str(root) if root else None, str(pattern))
                    matches = sorted(glob.glob(full)) or [full]
                    for path in matches:
                        rel = os.path.relpath(path, str(root)) if root else path
                        files[rel] = os.path.getsize(path) if os.path.isfile(path) else None
                out[f"data:{name}.{key}.{split}"] = files
    return out


def run_fingerprint(cfg) -> Dict[str, Any]:
    """The composed config's dotted keys (less :data:`RESUME_FREE_KEYS`) and the data files with sizes."""
    from omegaconf import OmegaConf

    flat: Dict[str, Any] = {}
    _flatten(OmegaConf.to_container(cfg.config, resolve=True), "", flat)
    flat = {k: v for k, v in flat.items() if k not in RESUME_FREE_KEYS}
    flat.update(_data_files(cfg))
    return json.loads(json.dumps(flat, sort_keys=True, default=str))  # the form it has once read back


def write_fingerprint(directory: str, fingerprint: Dict[str, Any]) -> None:
    """``<directory>/fingerprint.json`` (fsynced)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(fingerprint, fh, indent=1, sort_keys=True)

    write_atomically(os.path.join(directory, FINGERPRINT_FILE), write)


def fingerprint_changes(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """The keys whose values differ (or that only one side has), sorted.

    A key one side lacks and the other holds as null is no change: an option added later with a null
    default (off, such as ``features_dir``) leaves a run as it was.
    """
    def same(a: Any, b: Any) -> bool:
        return a == b or (a in ("<absent>", None) and b in ("<absent>", None))

    return sorted(k for k in set(saved) | set(current) if not same(saved.get(k, "<absent>"), current.get(k, "<absent>")))


def check_resume_matches(cfg, ckpt_dir: str) -> None:
    """Refuse (:class:`ResumeMismatchError`) resuming ``ckpt_dir`` with another config or other data.

    ``run.resume_allow_changes`` turns the refusal into a warning. A checkpoint without a
    fingerprint (written before they were recorded) is resumed with a warning.
    """
    path = os.path.join(ckpt_dir, FINGERPRINT_FILE)
    if not os.path.isfile(path):
        logger.warning("checkpoint %s records no fingerprint: cannot check that the config and data match", ckpt_dir)
        return
    with open(path) as fh:
        saved = json.load(fh)
    current = run_fingerprint(cfg)
    changed = fingerprint_changes(saved, current)
    if not changed:
        return
    shown = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in changed[:8])
    more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
    if cfg.run_cfg.get("resume_allow_changes"):
        logger.warning("resuming %s with changes (run.resume_allow_changes=true): %s%s", ckpt_dir, shown, more)
        return
    raise ResumeMismatchError(
        f"run.resume_ckpt_path: checkpoint {ckpt_dir} was written with another config or other data; "
        f"changed: {shown}{more}. Resume with the checkpoint's settings, start a new run in another "
        f"run.output_dir, or set run.resume_allow_changes=true to resume anyway"
    )
