"""Drawing without torch: the Pillow view steps match torchvision's on PIL images."""
import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from dissect_core.engine.unit_views import view_steps
from dissect_core.runs.unit_images import apply_view


def _image(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(width * 1000 + height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("preprocess", [
    T.Compose([T.Resize(256), T.CenterCrop(224)]),  # torchvision's ImageNet models
    T.Compose([T.Resize((224, 224)), T.CenterCrop(200)]),
    T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC, max_size=80)]),
    T.Compose([T.Resize(28), T.CenterCrop(32)]),  # a crop larger than the image is padded
])
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (28, 28)])
def test_pillow_view_equals_torchvision_pixel_for_pixel(preprocess, size):
    image = _image(*size)
    # Both run the same Pillow resampling; the sizes, crop corners and padding must agree exactly.
    assert np.array_equal(np.asarray(apply_view(view_steps(preprocess), image)), np.asarray(preprocess(image)))
