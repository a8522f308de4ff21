"""Model families, one line each: spec prefix -> the module that builds its models and says how
their inputs are preprocessed. Import the submodules; this package stays free of torch."""

from pipeline.core.registry import Entry, Registry

FAMILIES = Registry(
    "model family",
    [
        Entry(
            "torchvision",
            "pipeline.models.torchvision:TorchvisionFamily",
            "torchvision:NAME, any classification model of torchvision.models (random init unless --weights)",
        ),
        Entry(
            "timm",
            "pipeline.models.timm:TimmFamily",
            "timm:NAME, any timm model (random init unless --weights; preprocessing from its pretrained config)",
            requires=("timm",),
            install_hint="pip install timm (or: pip install -e '.[timm]')",
        ),
        Entry(
            "cifar",
            "pipeline.models.cifar:CifarFamily",
            "cifar:resnet20|32|44|56|110, CIFAR ResNets with option-A shortcuts (He et al. 2016)",
        ),
        Entry(
            "factory",
            "pipeline.models.factory:FactoryFamily",
            "package.module:factory or path/to/file.py:factory, a function of yours that returns an nn.Module (--model-arg k=v)",
        ),
        Entry(
            "memory",
            "pipeline.models.memory:MemoryFamily",
            "an nn.Module object handed to the Python API, pipeline.run(model, ...)",
        ),
    ],
)
