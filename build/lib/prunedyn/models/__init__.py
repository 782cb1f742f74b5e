"""Models of the study, each buildable by name from a config (:func:`build_model`).

Every model is either a chain of Linear/Conv(+BatchNorm) layers, whose node
wiring :func:`prunedyn.structure.nodes.chain_node_layers` reads off, or defines
its own ``node_layers()`` (:class:`UNet`). Add a model: a module here with a
builder decorated by :func:`register_model`, imported below.
"""
from prunedyn.models.cxr import CXR_WIDTHS, CXRNet, build_cxr_cnn
from prunedyn.models.mlp import MLP, build_mlp
from prunedyn.models.registry import MODELS, build_model, register_model
from prunedyn.models.unet import DoubleConv, UNet, build_unet
from prunedyn.models.vgg import VGG, VGG16_CFG, build_vgg16

__all__ = ["MODELS", "build_model", "register_model", "MLP", "VGG", "VGG16_CFG", "UNet", "DoubleConv", "CXRNet",
           "CXR_WIDTHS", "build_mlp", "build_vgg16", "build_unet", "build_cxr_cnn"]
