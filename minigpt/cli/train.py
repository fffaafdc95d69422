"""``train.py``: compose the config, then run one stage or a pipeline of stages."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from minigpt.common.config import Config, ConfigError
from minigpt.common.config.shipped import cfg_path_arg
from minigpt.common.launch import finish_distributed
from minigpt.common.logger import setup_logging
from minigpt.common.registry import RegistryError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a minigpt model from a YAML config.")
    p.add_argument("--cfg-path", required=True, type=cfg_path_arg, help="a stage config or a pipeline config (train_configs/*.yaml)")
    p.add_argument(
        "--options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. run.max_iters=20 model.llm.lora_r=0 (a pipeline applies them to every stage)",
    )
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if Config.is_pipeline_file(args.cfg_path):
            if args.print_config:
                pipe = Config.load_pipeline(args.cfg_path).pipeline
                for stage in pipe.stages:
                    if stage.get("module") is not None:
                        continue  # a command stage has no config to print
                    # one YAML document per stage, so `yaml.safe_load_all` reads the output back; the options
                    # in the order a run applies them (the pipeline's, the user's, then the stage's own)
                    opts = [str(o) for o in [*(pipe.get("options") or []), *args.options, *(stage.get("options") or [])]]
                    print(f"--- # stage {stage.name}: {stage.cfg}")
                    print(Config(str(stage.cfg), opts).to_yaml())
                return 0
            from minigpt.runners.pipeline import run_pipeline

            run_pipeline(args.cfg_path, args.options)
            finish_distributed()
            return 0
        cfg = Config(args.cfg_path, args.options)
        if args.print_config:
            print(cfg.to_yaml())
            return 0
        from minigpt.runners.stage import run_stage

        summary = run_stage(cfg)
        if summary.get("metrics"):
            from minigpt.runners.pipeline import format_table

            print(format_table(summary["metrics"]))
        finish_distributed()
        return 0
    except (ConfigError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    raise SystemExit(main())
