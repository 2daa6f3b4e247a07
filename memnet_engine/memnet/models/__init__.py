"""MemNet model definitions: prototxt generation (original release naming) and graph depth."""
from .depth import conv_depth
from .memnet import MemNetConfig, memnet_deploy_net, memnet_train_net

__all__ = ["MemNetConfig", "conv_depth", "memnet_deploy_net", "memnet_train_net"]
