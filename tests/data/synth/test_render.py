"""The rasteriser: labels, depth and colour come from the same pixels; geometry matches the camera."""

import numpy as np

from cepr.data.camera import Camera
from cepr.data.synth import objects as O
from cepr.data.synth.render import Frame, GroundBand, Lighting, Material, Patch

CAM = Camera.from_fov(320, 240, 90.0, mount_height=0.5, pitch_deg=5.0)
FLAT = Lighting(ambient=1.0, diffuse=0.0, tint=(1.0, 1.0, 1.0))
ROAD = GroundBand(-100, 100, 0, Material((0.3, 0.3, 0.3), tex_amp=0.0))


def flat_frame():
    f = Frame(CAM, FLAT)
    f.draw_sky(np.random.default_rng(0), clouds=0.0)
    f.draw_ground([], ROAD, 0.0, [], [], [])
    return f


def test_labels_are_pixel_exact_with_rgb():
    f = flat_frame()
    red = Material((0.9, 0.1, 0.1), tex_amp=0.0)
    blue = Material((0.1, 0.1, 0.9), tex_amp=0.0)
    for p in O.box(0.5, 4.0, 1.0, 0.8, 1.0, 0.3, 29, 1, red):
        f.draw_patch(p)
    for p in O.billboard(-0.3, 6.0, [(O._ellipse(0, 0.9, 0.4, 0.9, n=20), blue)], 11, 2):
        f.draw_patch(p)  # partly hidden behind the box
    is_red = np.all(np.isclose(f.rgb, (0.9, 0.1, 0.1)), axis=-1)
    is_blue = np.all(np.isclose(f.rgb, (0.1, 0.1, 0.9)), axis=-1)
    is_road = np.all(np.isclose(f.rgb, (0.3, 0.3, 0.3)), axis=-1)
    assert is_red.sum() > 500 and is_blue.sum() > 500
    np.testing.assert_array_equal(is_red, f.label == 29)
    np.testing.assert_array_equal(is_blue, f.label == 11)
    np.testing.assert_array_equal(is_road, f.label == 0)
    np.testing.assert_array_equal(f.instance == 1, is_red)
    assert ((f.label == 11) & (f.instance != 2)).sum() == 0


def test_ground_depth_matches_camera_geometry_and_sky_has_none():
    f = flat_frame()
    v, u = np.mgrid[0:CAM.height, 0:CAM.width]
    _, _, t = CAM.ground_points(u, v)
    ground = np.isfinite(t)
    np.testing.assert_allclose(f.depth[ground], t[ground], rtol=1e-4)
    assert np.all(f.label[~ground] == 10) and np.all(np.isinf(f.depth[~ground]))


def test_patch_depth_is_its_plane_and_occlusion_follows_depth():
    f = flat_frame()
    near = Material((1.0, 0.0, 0.0), tex_amp=0.0)
    far = Material((0.0, 1.0, 0.0), tex_amp=0.0)
    for p in O.billboard(0.0, 5.0, [(O._rect(1.0, 1.0, -0.5), far)], 3, 1, e1=np.array([1.0, 0, 0])):
        f.draw_patch(p)
    for p in O.billboard(0.0, 3.0, [(O._rect(0.4, 0.4, -0.2, 0.2), near)], 29, 2, e1=np.array([1.0, 0, 0])):
        f.draw_patch(p)
    u, v, _ = CAM.project(np.array([[0.0, 0.4, 3.0], [0.4, 0.9, 5.0]]))
    assert f.label[int(v[0]), int(u[0])] == 29 and f.label[int(v[1]), int(u[1])] == 3
    rays = CAM.pixel_rays(np.array([int(u[1])]), np.array([int(v[1])]))
    assert abs(f.depth[int(v[1]), int(u[1])] - 5.0 / rays[0, 2]) < 1e-3


def test_ring_outline_leaves_its_hole_open():
    f = flat_frame()
    tyre = Material((0.0, 0.0, 0.0), tex_amp=0.0)
    f.draw_patch(Patch(np.array([0.0, 0.0, 2.0]), np.array([1.0, 0, 0]), O.UP, O._wheel(0.0, 0.35, 0.08), 18, 1, tyre))
    u, v, _ = CAM.project(np.array([[0.0, 0.35, 2.0], [0.0 + 0.31, 0.35, 2.0]]))
    assert f.label[int(v[0]), int(u[0])] == 0  # centre: road shows through
    assert f.label[int(v[1]), int(u[1])] == 18  # on the tyre


def test_polygons_crossing_the_camera_plane_are_clipped_not_lost():
    f = flat_frame()
    wall = Material((0.5, 0.4, 0.3), tex_amp=0.0)
    # a wall along the left side from behind the robot to 20 m ahead
    f.draw_patch(Patch(np.array([-1.5, 0.0, -5.0]), np.array([0.0, 0, 1.0]), O.UP, O._rect(25.0, 3.0), 3, 1, wall))
    assert (f.label[:, : CAM.width // 4] == 3).mean() > 0.3
    assert (f.label[:, CAM.width // 2:] == 3).sum() == 0
