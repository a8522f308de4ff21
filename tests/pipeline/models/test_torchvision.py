"""torchvision family: preprocessing from the weights entry that fits the model as it is built."""

from pipeline.models.build import build_model, preprocessing_of


def test_a_fixed_size_vit_gets_the_preprocessing_of_the_size_it_is_built_at():
    # vit_h_14's default weights entry is the 518 px one, but a model built without weights is 224 px
    assert preprocessing_of("torchvision:vit_h_14").input_size == (3, 224, 224)
    big = preprocessing_of("torchvision:vit_b_16", {"image_size": 384})
    assert big.input_size == (3, 384, 384) and big.interpolation == "bicubic"  # the 384 px SWAG entry's resize
    assert build_model("torchvision:vit_b_16", model_args={"image_size": 384}).image_size == 384


def test_fully_convolutional_models_keep_their_default_entry():
    assert preprocessing_of("torchvision:efficientnet_b3").input_size == (3, 300, 300)
    assert preprocessing_of("torchvision:inception_v3").input_size == (3, 299, 299)
