"""The pure pixel functions of the DICOM grayscale pipeline, pinned with exact numbers."""

from __future__ import annotations

import numpy as np
import pytest

from braincls.config import ConvertConfig
from braincls.convert import pixels
from braincls.convert.files import render_frame
from braincls.convert.reading import FrameAttributes, Lut


def test_apply_rescale_is_slope_times_stored_plus_intercept() -> None:
    stored = np.array([[0, 1], [100, -3]], dtype=np.int16)
    out = pixels.apply_rescale(stored, 2.5, -1024)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[-1024.0, -1021.5], [-774.0, -1031.5]])


def test_linear_window_follows_ps3_3_c_11_2_1_2_1() -> None:
    # c = 150, w = 101: 0 at or below 99.5, 255 above 199.5, linear in between.
    values = [0, 99.5, 100, 149.5, 150, 199.5, 200, 300]
    out = pixels.apply_window(values, 150, 101)
    np.testing.assert_allclose(
        out, [0.0, 0.0, 1.275, 127.5, 128.775, 255.0, 255.0, 255.0], rtol=0, atol=1e-12
    )


def test_linear_window_of_width_one_is_a_threshold() -> None:
    out = pixels.apply_window([9, 9.5, 9.6, 10, 11], 10, 1)
    np.testing.assert_array_equal(out, [0.0, 0.0, 255.0, 255.0, 255.0])


def test_linear_exact_and_sigmoid_windows() -> None:
    exact = pixels.apply_window([0, 50, 100, 150, 200], 100, 100, function="LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.0, 127.5, 255.0, 255.0], atol=1e-12)
    sigmoid = pixels.apply_window([100], 100, 40, function="SIGMOID")
    np.testing.assert_allclose(sigmoid, [127.5], atol=1e-12)


@pytest.mark.parametrize(
    ("width", "function", "message"),
    [
        (0.5, "LINEAR", "LINEAR window width must be >= 1"),
        (0, "LINEAR_EXACT", "LINEAR_EXACT window width must be > 0"),
        (10, "GAMMA", "unsupported (0028,1056) VOI LUT Function 'GAMMA'"),
    ],
)
def test_invalid_windows_raise(width: float, function: str, message: str) -> None:
    with pytest.raises(pixels.WindowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pixels.apply_window([1.0], 10, width, function=function)


def test_percentile_window_maps_low_and_high_percentiles_to_0_and_255() -> None:
    values = np.arange(101, dtype=np.int16)  # percentiles equal the values
    assert pixels.percentile_bounds(values, 1, 99) == (1.0, 99.0)
    out = pixels.percentile_window(values, 1, 99)
    assert out[0] == 0.0 and out[1] == 0.0
    assert out[50] == pytest.approx(49 / 98 * 255, abs=1e-12)
    assert out[99] == 255.0 and out[100] == 255.0
    np.testing.assert_array_equal(pixels.to_uint8(out[[0, 50, 99]]), [0, 128, 255])


def test_percentile_window_of_a_constant_slice_is_black() -> None:
    out = pixels.percentile_window(np.full((4, 4), 7, dtype=np.uint16), 0.5, 99.5)
    np.testing.assert_array_equal(out, np.zeros((4, 4)))


def test_percentile_window_ignores_non_finite_values() -> None:
    out = pixels.percentile_window([0.0, np.nan, 10.0, np.inf], 0, 100)
    np.testing.assert_array_equal(out, [0.0, 0.0, 255.0, 0.0])


def test_invert_and_to_uint8_rounding() -> None:
    np.testing.assert_array_equal(pixels.invert([0, 100.5, 255]), [255.0, 154.5, 0.0])
    # Ties round to even; out-of-range values clip; NaN becomes 0.
    np.testing.assert_array_equal(
        pixels.to_uint8([-3, 0.5, 1.5, 127.5, 254.4, 300, np.nan]), [0, 0, 2, 128, 254, 255, 0]
    )
    np.testing.assert_array_equal(pixels.to_uint16([-1, 4095.5, 70000]), [0, 4096, 65535])


def test_apply_lut_clamps_below_first_mapped_and_above_last_entry() -> None:
    out = pixels.apply_lut([5, 10, 11, 12, 13, 40, 11.4], [0, 100, 200, 255], first_mapped=10)
    np.testing.assert_array_equal(out, [0, 0, 100, 200, 255, 255, 100])
    np.testing.assert_allclose(pixels.scale_lut_output([0, 2047.5, 4095], 12), [0, 127.5, 255])


def test_square_geometry_keeps_the_physical_aspect() -> None:
    assert pixels.square_geometry(320, 260, 256) == (256, 208)
    # 64 rows of 2 mm and 128 columns of 1 mm are 128 x 128 mm: a full square.
    assert pixels.square_geometry(64, 128, 256, pixel_spacing_mm=(2.0, 1.0)) == (256, 256)
    assert pixels.square_geometry(64, 128, 256, pixel_spacing_mm=(1.0, 1.0)) == (128, 256)
    assert pixels.square_geometry(1, 1, 8) == (8, 8)
    assert pixels.square_geometry(1, 1000, 8) == (1, 8)
    assert pixels.square_geometry(320, 260, 256, keep_aspect=False) == (256, 256)


def test_resize_to_square_pads_centred_with_black() -> None:
    image = np.full((2, 4), 200.0)
    out = pixels.resize_to_square(image, 8)
    assert out.shape == (8, 8) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:2], 0.0)
    np.testing.assert_array_equal(out[2:6], 200.0)
    np.testing.assert_array_equal(out[6:], 0.0)


def test_resize_area_averages_when_shrinking() -> None:
    image = np.zeros((16, 16))
    image[:, 8:] = 100.0
    out = pixels.resize_to_square(image, 8)
    np.testing.assert_array_equal(out[:, :4], 0.0)
    np.testing.assert_array_equal(out[:, 4:], 100.0)


def test_foreground_fraction_counts_pixels_strictly_above() -> None:
    assert pixels.foreground_fraction([[0, 1], [2, 3]], 1) == 0.5


def test_render_frame_applies_rescale_then_window_then_monochrome1_inversion() -> None:
    stored = np.array([[0, 10], [20, 30]], dtype=np.uint16)
    attributes = FrameAttributes(
        rescale_slope=2.0, rescale_intercept=-10.0, window_centers=(25.0,), window_widths=(41.0,)
    )
    frame = render_frame(stored, attributes, photometric="MONOCHROME1", config=ConvertConfig())
    assert frame.window_source == "window"
    # Rescaled: [-10, 10, 30, 50]; the window c=25 w=41 spans 4.5..44.5 and gives
    # 0, 35.0625, 162.5625, 255, which MONOCHROME1 inverts.
    np.testing.assert_allclose(frame.display, [[255.0, 219.9375], [92.4375, 0.0]], atol=1e-9)
    # Values keep the rescale; MONOCHROME1 flips them within the frame's range.
    np.testing.assert_array_equal(frame.values, [[50.0, 30.0], [10.0, -10.0]])


def test_render_frame_prefers_the_voi_lut_sequence_and_falls_back_to_percentiles() -> None:
    stored = np.array([[8, 10], [11, 14]], dtype=np.uint16)
    lut = Lut(table=np.array([0.0, 100.0, 200.0, 255.0]), first_mapped=10, bits_per_entry=8)
    attributes = FrameAttributes(window_centers=(1.0,), window_widths=(1.0,))
    frame = render_frame(
        stored, attributes, photometric="MONOCHROME2", config=ConvertConfig(), voi_lut=lut
    )
    assert frame.window_source == "voi_lut_sequence"
    np.testing.assert_array_equal(frame.display, [[0.0, 0.0], [100.0, 255.0]])

    bad_window = FrameAttributes(window_centers=(10.0,), window_widths=(0.0,))
    config = ConvertConfig(percentile_low=0, percentile_high=100)
    frame = render_frame(stored, bad_window, photometric="MONOCHROME2", config=config)
    assert frame.window_source == "percentile"
    np.testing.assert_allclose(frame.display, [[0.0, 85.0], [127.5, 255.0]])


def test_window_source_percentile_ignores_the_file_window() -> None:
    stored = np.array([[0, 100]], dtype=np.uint16)
    attributes = FrameAttributes(window_centers=(1000.0,), window_widths=(10.0,))
    config = ConvertConfig(window_source="percentile", percentile_low=0, percentile_high=100)
    frame = render_frame(stored, attributes, photometric="MONOCHROME2", config=config)
    assert frame.window_source == "percentile"
    np.testing.assert_array_equal(frame.display, [[0.0, 255.0]])
