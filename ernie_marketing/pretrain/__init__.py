"""Domain-adaptive ERNIE pretraining: masked language modelling, knowledge masking."""

from .config import PretrainConfig, build_pretrain_config, load_pretrain_config

__all__ = ["PretrainConfig", "build_pretrain_config", "load_pretrain_config",
           "pretrain"]


def pretrain(config):
    """Pretrain on `config` with `trainer.Pretrainer`."""
    from .trainer import pretrain as run

    return run(config)
