"""What every benchmark here shares: the machine description and the results-file schema.

A results file (``benchmarks/results/<name>.json``) is one JSON object::

    {"benchmark": name, "machine": {...}, "date": "2026-11-24T10:00:00+00:00",
     "rows": [{"metric": ..., "value": ..., "unit": ..., "note": ...}, ...],
     "raw": {...}}

``rows`` are the figures ``benchmarks/report.py`` puts in the docs table for ``name``; ``raw``
holds whatever a reader needs to check them (per-run timings, shapes, settings).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
from typing import Any, Dict, List, Optional

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

ROW_KEYS = ("metric", "value", "unit", "note")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """CPU model, cores, torch/transformers/python versions, the device and the load when the run started."""
    import transformers

    device = device or torch.device("cpu")
    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        # other processes' load when the run started: figures from a busy machine read low
        "load_avg_1m_before": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_label(machine: Dict[str, Any]) -> str:
    """A short description of a results file's machine for a table cell."""
    where = machine.get("gpu") or f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    load = machine.get("load_avg_1m_before")
    tail = f", load {load}" if load is not None else ""
    return f"{where} ({machine.get('device', 'cpu')}, torch {machine.get('torch', '?')}{tail})"


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    ``VmHWM`` of ``/proc/self/status`` where there is one: ``ru_maxrss`` is carried over from the
    parent across fork and exec, so a child of a large process would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def model_overrides(yaml_text: str, *more: Dict[str, Any]) -> Dict[str, Any]:
    """A stage YAML's ``model:`` section without ``arch``/``model_type``, with ``more`` merged over it."""
    from omegaconf import OmegaConf

    model = OmegaConf.create(yaml_text).model
    merged = OmegaConf.merge({k: v for k, v in model.items() if k not in ("arch", "model_type")}, *more)
    return OmegaConf.to_container(merged)


def row(metric: str, value: Any, unit: str = "", note: str = "") -> Dict[str, Any]:
    """One figure of a results file."""
    return {"metric": metric, "value": value, "unit": unit, "note": note}


def results(
    name: str, machine: Dict[str, Any], rows: List[Dict[str, Any]], raw: Dict[str, Any]
) -> Dict[str, Any]:
    """A results object in the shared schema; a row missing one of ``ROW_KEYS`` is an error naming it."""
    for i, r in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"{name}: row {i} ({r.get('metric', '?')!r}) lacks {missing}")
    return {
        "benchmark": name,
        "machine": machine,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "raw": raw,
    }


def write_results(report: Dict[str, Any], path: Optional[str] = None) -> str:
    """Write ``report`` to ``path`` (default ``benchmarks/results/<benchmark>.json``) via a temporary file."""
    path = path or os.path.join(RESULTS_DIR, f"{report['benchmark']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path
