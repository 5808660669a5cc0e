//! The embedded synthetic RGB-D scene generator: the CPU-sized stand-in for NYUv2 in the
//! segmentation experiment (issue 6, paper §4.2).
//!
//! Every scene is a room (an axis-aligned box: floor, ceiling, four walls) with furniture-like
//! axis-aligned boxes, ray-cast through a pinhole camera (NYUv2's Kinect field of view) into an
//! RGB image, a depth map in millimetres (z-depth, whole mm as a 16-bit sensor stores it, with
//! Kinect-like noise) and a label map. The ten classes are designed so that **neither
//! modality alone can label every pixel**:
//!
//! | label | class | geometry | appearance | told apart by |
//! |---|---|---|---|---|
//! | 1 | wall | room side plane | *paint* | depth (orientation), vs floor/ceiling |
//! | 2 | floor | room bottom plane | *paint* | depth (orientation) |
//! | 3 | ceiling | room top plane | *paint* | depth (orientation) |
//! | 4 | window | flat on a wall (1 cm) | bright, low saturation, dark frame + cross | colour: invisible in depth |
//! | 5 | picture | flat on a wall (1 cm) | *panel* | colour vs wall/window; **depth** vs cabinet |
//! | 6 | cabinet | box on a wall, 25–50 cm deep | *panel* | **depth** (same look as picture) |
//! | 7 | bed | box on the floor | light, unsaturated, soft stripes | **colour** (same shape as sofa) |
//! | 8 | sofa | box on the floor | dark, saturated, plain | **colour** (same shape as bed) |
//! | 9 | table | slab on four legs | wood | both |
//! | 10 | rug | flat on the floor (1 cm) | two-colour checker | colour: invisible in depth |
//! | 0 | void | small clutter boxes | random colours | ignored |
//!
//! *paint* and *panel* are colour distributions shared by the classes in their rows, drawn
//! independently per surface, so colour carries no information between wall, floor and
//! ceiling, or between picture and cabinet. Flat objects sit 1 cm off their plane, below the
//! depth noise at room distances (Nguyen et al. 2012: σ ≈ 1.2 + 1.9 (z − 0.4)² mm, 14 mm at
//! 3 m), so a depth-only network cannot see windows, pictures or rugs, and an RGB-only network
//! cannot tell a picture from a cabinet or (mostly) floor from wall by colour. Fusion is needed
//! for all ten.
//!
//! Generation is deterministic: sample `i` of a split comes from a ChaCha8 stream keyed by
//! (seed, split, i), so samples render independently, in parallel, in any order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::io::{write_sample_pngs, SamplePngs};
use super::{RgbdBatch, RgbdDataset, RgbdSample, Split};
use crate::{Error, Result};

/// Class names of the generator, index `c` = label `c + 1` (0 = void).
pub const SYNTHETIC_CLASS_NAMES: [&str; 10] = [
    "wall", "floor", "ceiling", "window", "picture", "cabinet", "bed", "sofa", "table", "rug",
];

const WALL: u8 = 1;
const FLOOR: u8 = 2;
const CEILING: u8 = 3;
const WINDOW: u8 = 4;
const PICTURE: u8 = 5;
const CABINET: u8 = 6;
const BED: u8 = 7;
const SOFA: u8 = 8;
const TABLE: u8 = 9;
const RUG: u8 = 10;
const VOID: u8 = 0;

/// How many objects of each kind a scene holds, each drawn uniformly from `[min, max]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectCounts {
    /// Windows. Default [1, 2] (our choice, with the other counts tuned so that no class is
    /// under about 2 % of the pixels; `docs/rgbd-data.md`).
    pub windows: [usize; 2],
    /// Pictures. Default [2, 4] (our choice: pictures are small on screen).
    pub pictures: [usize; 2],
    /// Wall cabinets. Default [1, 3] (our choice, as pictures; cabinets are larger on screen).
    pub cabinets: [usize; 2],
    /// Beds. Default [0, 1] (our choice: bed and sofa equally likely).
    pub beds: [usize; 2],
    /// Sofas. Default [0, 1] (as beds).
    pub sofas: [usize; 2],
    /// Tables. Default [0, 2] (our choice: a table top is thin on screen).
    pub tables: [usize; 2],
    /// Rugs. Default [0, 1] (our choice).
    pub rugs: [usize; 2],
    /// Void clutter boxes. Default [0, 3] (our choice: a few percent void, as NYUv2's
    /// unlabelled pixels, so the ignore path is exercised).
    pub clutter: [usize; 2],
}

impl Default for ObjectCounts {
    fn default() -> Self {
        Self {
            windows: [1, 2],
            pictures: [2, 4],
            cabinets: [1, 3],
            beds: [0, 1],
            sofas: [0, 1],
            tables: [0, 2],
            rugs: [0, 1],
            clutter: [0, 3],
        }
    }
}

/// The generator configuration. Every field has a default; JSON files may set any subset
/// (unknown keys are rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticRgbdConfig {
    /// Image height; a multiple of 32 (ESANet's ×2 upsamplers, notes §6). Default 96 (the
    /// notes' CPU size 96×128, 3:4 like NYUv2's 480×640).
    pub height: usize,
    /// Image width; a multiple of 32. Default 128 (notes §6).
    pub width: usize,
    /// Training scenes. Default 795 (NYUv2's train split size).
    pub train_samples: usize,
    /// Test scenes. Default 654 (NYUv2's test split size).
    pub test_samples: usize,
    /// Horizontal field of view. Default 63.3° (NYUv2 Kinect: fx = 518.86 px at 640 px,
    /// 2·atan(320 / 518.86)).
    pub fov_x_deg: f64,
    /// Room width (x) range. Default [3.0, 6.0] m (our choice: bedroom to living room).
    pub room_width_m: [f64; 2],
    /// Room depth (z) range. Default [3.5, 7.0] m (our choice; NYUv2 depth mean 2.8 m).
    pub room_depth_m: [f64; 2],
    /// Room height range. Default [2.4, 3.0] m (typical ceilings).
    pub room_height_m: [f64; 2],
    /// Camera height range. Default [1.0, 1.6] m (hand-held Kinect, as NYUv2's capture).
    pub camera_height_m: [f64; 2],
    /// Camera pitch range (negative looks down). Default [−20, 5]° (our choice: floor and
    /// ceiling both often in view; with [−25, −5] ceiling was under 1 % of the pixels).
    pub camera_pitch_deg: [f64; 2],
    /// Camera yaw range. Default [−30, 30]° (our choice: side walls in view).
    pub camera_yaw_deg: [f64; 2],
    /// Objects per scene.
    pub objects: ObjectCounts,
    /// Depth noise at the camera: σ(z) = base + quad · (z − 0.4 m)², z in m. Default 1.2 mm
    /// (Nguyen, Izadi, Lovell 2012, "Modeling Kinect sensor noise", axial model).
    pub depth_noise_base_mm: f64,
    /// Quadratic depth-noise term. Default 1.9 mm/m² (Nguyen et al. 2012).
    pub depth_noise_quad_mm: f64,
    /// Largest depth; farther hits are clamped. Default 10,000 mm (NYUv2's 10 m range).
    pub max_depth_mm: f64,
    /// Std of the per-pixel RGB noise on the `[0, 255]` scale. Default 6 (our choice: visible
    /// sensor grain that does not hide the textures).
    pub rgb_noise_std: f64,
    /// Lambertian shading strength k (brightness × (1 − k + k·|n·l|), one light per scene).
    /// Default 0.25 (our choice: orientation is a weak RGB cue, not a giveaway).
    pub shading_strength: f64,
}

impl Default for SyntheticRgbdConfig {
    fn default() -> Self {
        Self {
            height: 96,
            width: 128,
            train_samples: 795,
            test_samples: 654,
            fov_x_deg: 63.3,
            room_width_m: [3.0, 6.0],
            room_depth_m: [3.5, 7.0],
            room_height_m: [2.4, 3.0],
            camera_height_m: [1.0, 1.6],
            camera_pitch_deg: [-20.0, 5.0],
            camera_yaw_deg: [-30.0, 30.0],
            objects: ObjectCounts::default(),
            depth_noise_base_mm: 1.2,
            depth_noise_quad_mm: 1.9,
            max_depth_mm: 10_000.0,
            rgb_noise_std: 6.0,
            shading_strength: 0.25,
        }
    }
}

impl SyntheticRgbdConfig {
    /// Reads a JSON config (any subset of fields; unknown keys are errors naming the file).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = super::invalid_config;
        for (field, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v % 32 != 0 {
                return bad(
                    field,
                    "a positive multiple of 32 (ESANet's five ×2 stages)",
                    v.to_string(),
                );
            }
        }
        if !(self.fov_x_deg > 1.0 && self.fov_x_deg < 170.0) {
            return bad("fov_x_deg", "in (1, 170)", self.fov_x_deg.to_string());
        }
        let ranges = [
            ("room_width_m", self.room_width_m, 2.0, 50.0),
            ("room_depth_m", self.room_depth_m, 3.0, 50.0),
            ("room_height_m", self.room_height_m, 2.0, 10.0),
            ("camera_height_m", self.camera_height_m, 0.1, 1.9),
            ("camera_pitch_deg", self.camera_pitch_deg, -80.0, 80.0),
            ("camera_yaw_deg", self.camera_yaw_deg, -80.0, 80.0),
        ];
        for (field, [lo, hi], min, max) in ranges {
            if !(lo >= min && lo <= hi && hi <= max) {
                return bad(
                    field,
                    &format!("[lo, hi] with {min} <= lo <= hi <= {max}"),
                    format!("[{lo}, {hi}]"),
                );
            }
        }
        let o = &self.objects;
        for (field, [lo, hi]) in [
            ("objects.windows", o.windows),
            ("objects.pictures", o.pictures),
            ("objects.cabinets", o.cabinets),
            ("objects.beds", o.beds),
            ("objects.sofas", o.sofas),
            ("objects.tables", o.tables),
            ("objects.rugs", o.rugs),
            ("objects.clutter", o.clutter),
        ] {
            if lo > hi || hi > 16 {
                return bad(
                    field,
                    "[min, max] with min <= max <= 16",
                    format!("[{lo}, {hi}]"),
                );
            }
        }
        for (field, v) in [
            ("depth_noise_base_mm", self.depth_noise_base_mm),
            ("depth_noise_quad_mm", self.depth_noise_quad_mm),
            ("rgb_noise_std", self.rgb_noise_std),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, ">= 0, finite", v.to_string());
            }
        }
        if !(self.max_depth_mm > 0.0 && self.max_depth_mm <= 65535.0) {
            return bad(
                "max_depth_mm",
                "in (0, 65535]",
                self.max_depth_mm.to_string(),
            );
        }
        if !(0.0..=1.0).contains(&self.shading_strength) {
            return bad(
                "shading_strength",
                "in [0, 1]",
                self.shading_strength.to_string(),
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scene description.

type V3 = [f64; 3];

#[derive(Debug, Clone, Copy)]
enum Texture {
    Plain,
    /// Stripes of `color2` along the horizontal (`vertical = true`) or vertical in-face axis.
    Stripes {
        period_m: f64,
        vertical: bool,
        color2: V3,
        share: f64,
    },
    Checker {
        period_m: f64,
        color2: V3,
    },
    /// A window pane with a frame and a centre cross in `frame`.
    Window {
        frame: V3,
    },
}

#[derive(Debug, Clone, Copy)]
struct Material {
    label: u8,
    color: V3,
    texture: Texture,
}

#[derive(Debug, Clone, Copy)]
struct Aabb {
    min: V3,
    max: V3,
    material: Material,
}

struct Scene {
    room: Aabb,
    /// Materials of the six room faces: x-min, x-max, y-min (floor), y-max (ceiling), z-min,
    /// z-max.
    room_faces: [Material; 6],
    boxes: Vec<Aabb>,
    eye: V3,
    right: V3,
    up: V3,
    forward: V3,
    light: V3,
}

fn hsv(h: f64, s: f64, v: f64) -> V3 {
    let (r, g, b) = super::augment::hsv_to_rgb(h as f32, s as f32, v as f32);
    [f64::from(r), f64::from(g), f64::from(b)]
}

fn u(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

fn count(rng: &mut ChaCha8Rng, [lo, hi]: [usize; 2]) -> usize {
    rng.random_range(lo..=hi)
}

/// Paint: the shared distribution of wall, floor and ceiling.
fn paint(rng: &mut ChaCha8Rng, label: u8) -> Material {
    let color = hsv(rng.random(), u(rng, [0.05, 0.35]), u(rng, [0.45, 0.85]));
    Material {
        label,
        color,
        texture: Texture::Plain,
    }
}

/// Panel: the shared distribution of picture and cabinet (any hue, saturated, stripes).
fn panel(rng: &mut ChaCha8Rng, label: u8) -> Material {
    let color = hsv(rng.random(), u(rng, [0.4, 0.9]), u(rng, [0.3, 0.8]));
    let color2 = hsv(rng.random(), u(rng, [0.4, 0.9]), u(rng, [0.3, 0.8]));
    Material {
        label,
        color,
        texture: Texture::Stripes {
            period_m: u(rng, [0.08, 0.25]),
            vertical: rng.random(),
            color2,
            share: u(rng, [0.2, 0.5]),
        },
    }
}

fn material(rng: &mut ChaCha8Rng, label: u8) -> Material {
    match label {
        WALL | FLOOR | CEILING => paint(rng, label),
        PICTURE | CABINET => panel(rng, label),
        WINDOW => Material {
            label,
            color: hsv(
                u(rng, [0.52, 0.64]),
                u(rng, [0.05, 0.3]),
                u(rng, [0.85, 1.0]),
            ),
            texture: Texture::Window {
                frame: hsv(rng.random(), u(rng, [0.0, 0.2]), u(rng, [0.1, 0.3])),
            },
        },
        BED => {
            let color = hsv(rng.random(), u(rng, [0.0, 0.2]), u(rng, [0.75, 0.95]));
            let color2 = hsv(rng.random(), u(rng, [0.0, 0.2]), u(rng, [0.6, 0.8]));
            Material {
                label,
                color,
                texture: Texture::Stripes {
                    period_m: u(rng, [0.15, 0.3]),
                    vertical: rng.random(),
                    color2,
                    share: 0.3,
                },
            }
        }
        SOFA => Material {
            label,
            color: hsv(rng.random(), u(rng, [0.5, 0.9]), u(rng, [0.25, 0.55])),
            texture: Texture::Plain,
        },
        TABLE => {
            let hue = u(rng, [0.05, 0.11]);
            let v = u(rng, [0.35, 0.7]);
            Material {
                label,
                color: hsv(hue, u(rng, [0.4, 0.7]), v),
                texture: Texture::Stripes {
                    period_m: u(rng, [0.02, 0.05]),
                    vertical: rng.random(),
                    color2: hsv(hue, 0.6, v * 0.75),
                    share: 0.4,
                },
            }
        }
        RUG => Material {
            label,
            color: hsv(rng.random(), u(rng, [0.5, 1.0]), u(rng, [0.4, 0.9])),
            texture: Texture::Checker {
                period_m: u(rng, [0.15, 0.35]),
                color2: hsv(rng.random(), u(rng, [0.5, 1.0]), u(rng, [0.4, 0.9])),
            },
        },
        _ => Material {
            label: VOID,
            color: [rng.random(), rng.random(), rng.random()],
            texture: Texture::Plain,
        },
    }
}

/// Which wall a wall object hangs on: 0 = x-min, 1 = x-max, 2 = z-max (back).
fn wall_object(
    rng: &mut ChaCha8Rng,
    room: V3,
    size: [f64; 2],
    bottom: f64,
    protrusion: f64,
    mat: Material,
) -> Aabb {
    let [rw, rh, rd] = room;
    let (w, h) = (size[0], size[1].min(rh - bottom - 0.05).max(0.1));
    let wall = rng.random_range(0..3);
    match wall {
        0 | 1 => {
            // side wall: along z, only from z = 1 m on (never around the camera)
            let z0 = u(rng, [1.0, (rd - w - 0.1).max(1.0)]);
            let (x0, x1) = if wall == 0 {
                (0.0, protrusion)
            } else {
                (rw - protrusion, rw)
            };
            Aabb {
                min: [x0, bottom, z0],
                max: [x1, bottom + h, z0 + w],
                material: mat,
            }
        }
        _ => {
            let x0 = u(rng, [0.1, (rw - w - 0.1).max(0.1)]);
            Aabb {
                min: [x0, bottom, rd - protrusion],
                max: [x0 + w, bottom + h, rd],
                material: mat,
            }
        }
    }
}

fn floor_box(
    rng: &mut ChaCha8Rng,
    room: V3,
    footprint: [f64; 2],
    height: f64,
    mat: Material,
) -> Aabb {
    let [rw, _, rd] = room;
    let (w, d) = (footprint[0].min(rw - 0.2), footprint[1].min(rd - 1.2));
    let x0 = u(rng, [0.0, (rw - w).max(0.0)]);
    let z0 = u(rng, [1.0, (rd - d).max(1.0)]);
    Aabb {
        min: [x0, 0.0, z0],
        max: [x0 + w, height, z0 + d],
        material: mat,
    }
}

fn build_scene(cfg: &SyntheticRgbdConfig, rng: &mut ChaCha8Rng) -> Scene {
    let room = [
        u(rng, cfg.room_width_m),
        u(rng, cfg.room_height_m),
        u(rng, cfg.room_depth_m),
    ];
    let room_faces = [
        material(rng, WALL),
        material(rng, WALL),
        material(rng, FLOOR),
        material(rng, CEILING),
        material(rng, WALL),
        material(rng, WALL),
    ];
    let o = &cfg.objects;
    let mut boxes = Vec::new();
    // Flat objects: 1 cm, each a little farther out than the previous so overlaps do not
    // z-fight.
    let mut flat = 0.01;
    for _ in 0..count(rng, o.windows) {
        let size = [u(rng, [0.6, 1.4]), u(rng, [0.8, 1.4])];
        let bottom = u(rng, [0.8, 1.2]);
        let mat = material(rng, WINDOW);
        boxes.push(wall_object(rng, room, size, bottom, flat, mat));
        flat += 0.002;
    }
    for _ in 0..count(rng, o.pictures) {
        let size = [u(rng, [0.4, 1.2]), u(rng, [0.3, 0.9])];
        let bottom = u(rng, [0.9, 1.6]);
        let mat = material(rng, PICTURE);
        boxes.push(wall_object(rng, room, size, bottom, flat, mat));
        flat += 0.002;
    }
    // Cabinets: the same size and height distribution as pictures, but deep.
    for _ in 0..count(rng, o.cabinets) {
        let size = [u(rng, [0.4, 1.2]), u(rng, [0.3, 0.9])];
        let bottom = u(rng, [0.9, 1.6]);
        let depth = u(rng, [0.25, 0.5]);
        let mat = material(rng, CABINET);
        boxes.push(wall_object(rng, room, size, bottom, depth, mat));
    }
    // Beds and sofas: one geometry distribution.
    let n_beds = count(rng, o.beds);
    let n_sofas = count(rng, o.sofas);
    for label in std::iter::repeat_n(BED, n_beds).chain(std::iter::repeat_n(SOFA, n_sofas)) {
        let footprint = [u(rng, [1.4, 2.2]), u(rng, [0.8, 2.0])];
        let height = u(rng, [0.4, 0.7]);
        let mat = material(rng, label);
        boxes.push(floor_box(rng, room, footprint, height, mat));
    }
    for _ in 0..count(rng, o.tables) {
        let footprint = [u(rng, [0.8, 1.6]), u(rng, [0.6, 1.0])];
        let height = u(rng, [0.7, 0.8]);
        let mat = material(rng, TABLE);
        let top = floor_box(rng, room, footprint, height, mat);
        let (lo, hi) = (top.min, top.max);
        let leg = 0.05;
        for (x, z) in [
            (lo[0], lo[2]),
            (hi[0] - leg, lo[2]),
            (lo[0], hi[2] - leg),
            (hi[0] - leg, hi[2] - leg),
        ] {
            boxes.push(Aabb {
                min: [x, 0.0, z],
                max: [x + leg, height - 0.04, z + leg],
                material: mat,
            });
        }
        boxes.push(Aabb {
            min: [lo[0], height - 0.04, lo[2]],
            ..top
        });
    }
    for _ in 0..count(rng, o.rugs) {
        let footprint = [u(rng, [1.2, 2.5]), u(rng, [1.0, 2.0])];
        let mat = material(rng, RUG);
        boxes.push(floor_box(rng, room, footprint, 0.01, mat));
    }
    for _ in 0..count(rng, o.clutter) {
        let s = u(rng, [0.15, 0.45]);
        let footprint = [s, u(rng, [0.15, 0.45])];
        let height = u(rng, [0.15, 0.5]);
        let mat = material(rng, VOID);
        boxes.push(floor_box(rng, room, footprint, height, mat));
    }
    // Camera near the front wall, inside the room, looking into it.
    let eye = [
        room[0] * u(rng, [0.3, 0.7]),
        u(rng, cfg.camera_height_m).min(room[1] - 0.2),
        u(rng, [0.2, 0.6]),
    ];
    let pitch = u(rng, cfg.camera_pitch_deg).to_radians();
    let yaw = u(rng, cfg.camera_yaw_deg).to_radians();
    let forward = [
        yaw.sin() * pitch.cos(),
        pitch.sin(),
        yaw.cos() * pitch.cos(),
    ];
    let right = [yaw.cos(), 0.0, -yaw.sin()];
    let up = cross(forward, right);
    let light = normalize([u(rng, [-1.0, 1.0]), u(rng, [0.3, 1.0]), u(rng, [-1.0, 1.0])]);
    Scene {
        room: Aabb {
            min: [0.0; 3],
            max: room,
            material: room_faces[0],
        },
        room_faces,
        boxes,
        eye,
        right,
        up,
        forward,
        light,
    }
}

fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalize(a: V3) -> V3 {
    let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt().max(1e-12);
    [a[0] / n, a[1] / n, a[2] / n]
}

/// A ray hit: distance t (= camera z-depth, the ray's forward component is 1), the face's
/// normal axis and side, the material and the box it belongs to.
struct Hit {
    t: f64,
    axis: usize,
    material: Material,
    min: V3,
    max: V3,
}

/// Where a ray from inside the room leaves it.
fn hit_room(scene: &Scene, o: V3, d: V3) -> Hit {
    let mut best = (f64::INFINITY, 0, 0);
    for axis in 0..3 {
        let (t, side) = if d[axis] > 1e-12 {
            ((scene.room.max[axis] - o[axis]) / d[axis], 1)
        } else if d[axis] < -1e-12 {
            ((scene.room.min[axis] - o[axis]) / d[axis], 0)
        } else {
            continue;
        };
        if t < best.0 {
            best = (t, axis, side);
        }
    }
    let (t, axis, side) = best;
    Hit {
        t,
        axis,
        material: scene.room_faces[2 * axis + side],
        min: scene.room.min,
        max: scene.room.max,
    }
}

/// Slab test: the entry distance and entry axis of a ray into a box, if it enters ahead.
fn hit_box(b: &Aabb, o: V3, inv: V3) -> Option<(f64, usize)> {
    let mut t_near = f64::NEG_INFINITY;
    let mut t_far = f64::INFINITY;
    let mut axis = 0;
    for a in 0..3 {
        let t1 = (b.min[a] - o[a]) * inv[a];
        let t2 = (b.max[a] - o[a]) * inv[a];
        let (lo, hi) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
        if lo > t_near {
            t_near = lo;
            axis = a;
        }
        t_far = t_far.min(hi);
    }
    (t_near <= t_far && t_near > 1e-6).then_some((t_near, axis))
}

fn shade(hit: &Hit, p: V3) -> V3 {
    let m = &hit.material;
    // In-face coordinates: s horizontal, t vertical (floor-like faces: s = x, t = z).
    let (sa, ta) = match hit.axis {
        0 => (2, 1),
        1 => (0, 2),
        _ => (0, 1),
    };
    let (s, t) = (p[sa] - hit.min[sa], p[ta] - hit.min[ta]);
    match m.texture {
        Texture::Plain => m.color,
        Texture::Stripes {
            period_m,
            vertical,
            color2,
            share,
        } => {
            let c = if vertical { s } else { t };
            if (c / period_m).rem_euclid(1.0) < share {
                color2
            } else {
                m.color
            }
        }
        Texture::Checker { period_m, color2 } => {
            let parity = ((s / period_m).floor() + (t / period_m).floor()) as i64;
            if parity.rem_euclid(2) == 0 {
                m.color
            } else {
                color2
            }
        }
        Texture::Window { frame } => {
            let (sw, tw) = (hit.max[sa] - hit.min[sa], hit.max[ta] - hit.min[ta]);
            let bar = 0.05;
            let near =
                |x: f64, len: f64| x < bar || x > len - bar || (x - len / 2.0).abs() < bar / 2.0;
            if near(s, sw) || near(t, tw) {
                frame
            } else {
                m.color
            }
        }
    }
}

/// Per-pixel sensor noise: SplitMix64 (seeded from the scene's ChaCha8 stream, so still
/// deterministic) and an Irwin–Hall approximation of a standard normal (sum of four 16-bit
/// uniforms, rescaled to unit variance). Several times cheaper than Box–Muller on ChaCha.
struct PixelNoise(u64);

impl PixelNoise {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Approximately N(0, 1) (bounded at ±2·√3).
    fn normal(&mut self) -> f64 {
        let r = self.next_u64();
        let sum: u64 = (0..4).map(|k| (r >> (16 * k)) & 0xFFFF).sum();
        // four U(0, 1): mean 2, variance 1/3
        (sum as f64 / 65536.0 - 2.0) * 3f64.sqrt()
    }
}

/// A conservative pixel rectangle `[x0, x1] × [y0, y1]` that holds a box's projection, or the
/// whole image when a corner is behind the camera.
fn screen_rect(scene: &Scene, b: &Aabb, f: f64, cx: f64, cy: f64, w: usize, h: usize) -> [i64; 4] {
    let full = [0, w as i64 - 1, 0, h as i64 - 1];
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for corner in 0..8 {
        let c: V3 = std::array::from_fn(|i| {
            if corner >> i & 1 == 1 {
                b.max[i]
            } else {
                b.min[i]
            }
        });
        let v: V3 = std::array::from_fn(|i| c[i] - scene.eye[i]);
        let dot = |a: V3| v[0] * a[0] + v[1] * a[1] + v[2] * a[2];
        let zc = dot(scene.forward);
        if zc <= 1e-3 {
            return full;
        }
        let px = dot(scene.right) / zc * f + cx;
        let py = -dot(scene.up) / zc * f + cy;
        x0 = x0.min(px);
        x1 = x1.max(px);
        y0 = y0.min(py);
        y1 = y1.max(py);
    }
    [
        (x0.floor() as i64 - 1).max(0),
        (x1.ceil() as i64 + 1).min(w as i64 - 1),
        (y0.floor() as i64 - 1).max(0),
        (y1.ceil() as i64 + 1).min(h as i64 - 1),
    ]
}

/// Renders one scene from `rng` (raw: RGB `[0, 255]`, depth whole mm).
fn render(cfg: &SyntheticRgbdConfig, rng: &mut ChaCha8Rng) -> RgbdSample {
    let scene = build_scene(cfg, rng);
    let (h, w) = (cfg.height, cfg.width);
    let plane = h * w;
    let f = (w as f64 / 2.0) / (cfg.fov_x_deg.to_radians() / 2.0).tan();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut rgb = vec![0f32; 3 * plane];
    let mut depth = vec![0f32; plane];
    let mut labels = vec![0u8; plane];
    let k = cfg.shading_strength;
    let mut noise = PixelNoise(rng.random());
    let rects: Vec<[i64; 4]> = scene
        .boxes
        .iter()
        .map(|b| screen_rect(&scene, b, f, cx, cy, w, h))
        .collect();
    for y in 0..h {
        for x in 0..w {
            let xc = (x as f64 + 0.5 - cx) / f;
            let yc = -(y as f64 + 0.5 - cy) / f;
            let d: V3 =
                std::array::from_fn(|i| xc * scene.right[i] + yc * scene.up[i] + scene.forward[i]);
            let inv: V3 = std::array::from_fn(|i| 1.0 / d[i]);
            let mut hit = hit_room(&scene, scene.eye, d);
            let (xi, yi) = (x as i64, y as i64);
            for (b, r) in scene.boxes.iter().zip(&rects) {
                if xi < r[0] || xi > r[1] || yi < r[2] || yi > r[3] {
                    continue;
                }
                if let Some((t, axis)) = hit_box(b, scene.eye, inv) {
                    if t < hit.t {
                        hit = Hit {
                            t,
                            axis,
                            material: b.material,
                            min: b.min,
                            max: b.max,
                        };
                    }
                }
            }
            let p: V3 = std::array::from_fn(|i| scene.eye[i] + hit.t * d[i]);
            let base = shade(&hit, p);
            let light = 1.0 - k + k * scene.light[hit.axis].abs();
            let i = y * w + x;
            for c in 0..3 {
                let v = base[c] * 255.0 * light + cfg.rgb_noise_std * noise.normal();
                rgb[c * plane + i] = v.clamp(0.0, 255.0) as f32;
            }
            let z_m = hit.t;
            let sigma_mm = cfg.depth_noise_base_mm + cfg.depth_noise_quad_mm * (z_m - 0.4).powi(2);
            let z_mm = z_m * 1000.0 + sigma_mm * noise.normal();
            depth[i] = z_mm.round().clamp(1.0, cfg.max_depth_mm) as f32;
            labels[i] = hit.material.label;
        }
    }
    RgbdSample {
        rgb,
        depth,
        labels,
        height: h,
        width: w,
    }
}

/// One split of the synthetic dataset; samples are rendered on demand (about a millisecond
/// each at 96×128), so nothing is held in memory.
#[derive(Debug, Clone)]
pub struct SyntheticRgbd {
    cfg: SyntheticRgbdConfig,
    split: Split,
    seed: u64,
}

impl SyntheticRgbd {
    /// The `split` of the dataset generated from `seed` (validates the config).
    pub fn new(cfg: &SyntheticRgbdConfig, split: Split, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg: cfg.clone(),
            split,
            seed,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticRgbdConfig {
        &self.cfg
    }

    /// Image height H.
    pub fn height(&self) -> usize {
        self.cfg.height
    }

    /// The split rendered.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Image width W.
    pub fn width(&self) -> usize {
        self.cfg.width
    }

    fn rng(&self, index: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let split_tag: u64 = match self.split {
            Split::Train => 0,
            Split::Test => 1,
        };
        rng.set_stream((split_tag << 48) | index as u64);
        rng
    }

    /// Renders samples `indices` in parallel and stacks them: rgb `(B, 3, H, W)` in
    /// `[0, 255]`, depth `(B, 1, H, W)` in mm, labels `(B, H, W)`.
    pub fn batch(&self, indices: &[usize]) -> Result<RgbdBatch> {
        let samples = indices
            .par_iter()
            .map(|&i| self.sample(i))
            .collect::<Result<Vec<_>>>()?;
        RgbdBatch::from_samples(&samples)
    }

    /// Pixel share of each label (index 0 = void, then the classes) over the first `n`
    /// samples.
    pub fn label_frequencies(&self, n: usize) -> Result<Vec<f64>> {
        let n = n.min(self.len());
        let counts = (0..n)
            .into_par_iter()
            .map(|i| {
                let s = self.sample(i)?;
                let mut c = vec![0u64; SYNTHETIC_CLASS_NAMES.len() + 1];
                for &l in &s.labels {
                    c[usize::from(l)] += 1;
                }
                Ok(c)
            })
            .try_reduce(
                || vec![0u64; SYNTHETIC_CLASS_NAMES.len() + 1],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    Ok(a)
                },
            )?;
        let total = counts.iter().sum::<u64>().max(1) as f64;
        Ok(counts.iter().map(|&c| c as f64 / total).collect())
    }

    /// Writes the first `count` samples as PNGs (`synthetic_{split}_{i:04}_{rgb,depth,
    /// labels,labels_colored}.png`) into `dir`, for inspection.
    pub fn write_pngs(&self, dir: &Path, count: usize) -> Result<Vec<SamplePngs>> {
        (0..count.min(self.len()))
            .map(|i| {
                let stem = format!("synthetic_{}_{i:04}", self.split.name());
                write_sample_pngs(dir, &stem, &self.sample(i)?)
            })
            .collect()
    }
}

impl RgbdDataset for SyntheticRgbd {
    fn len(&self) -> usize {
        match self.split {
            Split::Train => self.cfg.train_samples,
            Split::Test => self.cfg.test_samples,
        }
    }

    fn num_classes(&self) -> usize {
        SYNTHETIC_CLASS_NAMES.len()
    }

    fn class_names(&self) -> Vec<String> {
        SYNTHETIC_CLASS_NAMES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn sample(&self, index: usize) -> Result<RgbdSample> {
        if index >= self.len() {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        Ok(render(&self.cfg, &mut self.rng(index)))
    }
}
