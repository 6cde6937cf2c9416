"""The ablation models of the paper's Table 1 on Something-Something V1 with 8 frames.

The model is the config argument (big_vision style)::

  python train.py --config configs/sthv1_ablation.py:me50 --workdir runs/sthv1_me50

Choices: tsn_resnet50, tsn_res2net50, tsm_resnet50, r2plus1d_resnet50, r2plus1d_res2net50,
mta50, me50, me_nores50, se50, tea50. ResNet-based models start from the converted torchvision
ImageNet ResNet-50 (``python -m tea_jax.convert resnet50 ... --output pretrained/resnet50``),
Res2Net-based ones from Res2Net-50.
"""

from configs import sthv1_tea8

RESNET_MODELS = ("tsn_resnet50", "tsm_resnet50", "r2plus1d_resnet50", "me50", "me_nores50", "se50")
RES2NET_MODELS = ("tsn_res2net50", "r2plus1d_res2net50", "mta50", "tea50")


def get_config(model="tea50"):
    if model not in RESNET_MODELS + RES2NET_MODELS:
        raise ValueError(
            f"Unknown ablation model {model!r}; choose from {RESNET_MODELS + RES2NET_MODELS}."
        )
    config = sthv1_tea8.get_config()
    config.model = model
    if model in RESNET_MODELS:
        config.init_from = "pretrained/resnet50"
    return config
