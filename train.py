"""Train a model from a config: one stage, or a pipeline of stages.

    python train.py --cfg-path train_configs/quickstart.yaml
    torchrun --nproc-per-node 2 train.py --cfg-path train_configs/quickstart_stage1.yaml --options run.max_iters=20
"""

from minigpt.cli.train import main

if __name__ == "__main__":
    main()
