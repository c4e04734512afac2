//! CIFAR-10 and image folders end to end, on files the tests write in the datasets' formats, and
//! class-conditional training with classifier-free guidance.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    c.env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
        .env("DDPM_EVAL__FID", "false")
        .env_remove("DDPM_CIFAR10")
        .env_remove("DDPM_RESULTS_DIR");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DDPM_TRAIN") || k.starts_with("DDPM_DATA__")) {
        c.env_remove(k);
    }
    c
}

fn ddpm(args: &[&str], results: &Path, data_dir: &Path) -> Output {
    bin().args(args).arg("--results").arg(results).env("DDPM_DATA_DIR", data_dir).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// CIFAR-10 records (label byte, then 1024 R, G, B bytes): image i of a file is a horizontal ramp
/// of brightness 8·label in its red channel.
fn cifar_file(n: usize, first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let label = ((first + i) % 10) as u8;
        out.push(label);
        for c in 0..3 {
            for _y in 0..32 {
                for x in 0..32 {
                    out.push(if c == 0 { (label as usize * 8 + x * 4) as u8 } else { (x * 2) as u8 });
                }
            }
        }
    }
    out
}

fn cifar_folder(root: &Path) -> PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), cifar_file(20, i * 20)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_file(20, 0)).unwrap();
    dir
}

const TINY: &str = r#"
[data]
image_size = 16
[diffusion]
timesteps = 20
[model]
name = "simple"
[train]
steps = 6
batch_size = 10
log_every = 3
checkpoint_every = 6
[sample]
num_samples = 20
[eval]
bpd_images = 4
"#;

/// A run on a CIFAR-10 folder (given in `DDPM_CIFAR10`, then as `data.path`) trains and evaluates
/// the bound on the test batch; the folder's content, not its path, is the run's identity; missing
/// data and an archive that is not the official one are errors that say where to get CIFAR-10.
#[test]
fn cifar10_from_a_folder_trains_and_its_content_is_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, data) = (tmp.path().join("r"), tmp.path().join("data"));
    let folder = cifar_folder(&tmp.path().join("a"));
    let exp = tmp.path().join("c.toml");
    std::fs::write(&exp, TINY.replace("[data]\n", "[data]\nname = \"cifar10\"\nrandom_flip = true\n")).unwrap();

    let out = ddpm(&["plan", exp.to_str().unwrap()], &results, &data);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("cifar-10-binary.tar.gz") && err.contains("DDPM_CIFAR10"), "{err}");

    let plan = |env: Option<&Path>, sets: &[&str]| {
        let mut cmd = bin();
        cmd.args(["plan", exp.to_str().unwrap()]).args(sets).arg("--results").arg(&results).env("DDPM_DATA_DIR", &data);
        if let Some(p) = env {
            cmd.env("DDPM_CIFAR10", p);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string()
    };
    let by_env = plan(Some(&folder), &[]);
    let set = format!("data.path={:?}", folder.display().to_string());
    assert_eq!(plan(None, &["--set", &set]), by_env, "the path is not part of the identity");
    let copy = cifar_folder(&tmp.path().join("b"));
    assert_eq!(plan(Some(&copy), &[]), by_env, "the same content elsewhere is the same run");
    std::fs::write(copy.join("data_batch_3.bin"), cifar_file(20, 61)).unwrap();
    assert_ne!(plan(Some(&copy), &[]), by_env, "other training images are another run");

    let out = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&results)
        .env("DDPM_DATA_DIR", &data)
        .env("DDPM_CIFAR10", &folder)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let run = results.join("runs").join(&by_env);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "done");
    assert!(status["metrics"]["bpd"].as_f64().unwrap() > 0.0, "{status}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains(&folder.display().to_string()), "the resolved path is recorded: {config}");

    // An archive with the official name but other bytes is refused before anything is extracted.
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    let ok = Command::new("tar")
        .args(["czf", archive.to_str().unwrap(), "-C", tmp.path().join("a").to_str().unwrap(), "cifar-10-batches-bin"])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut cmd = bin();
    let out = cmd
        .args(["plan", exp.to_str().unwrap(), "--results"])
        .arg(&results)
        .env("DDPM_DATA_DIR", &data)
        .env("DDPM_CIFAR10", &archive)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("checksum mismatch") && err.contains("c4a38c50"), "{err}");
    assert!(!data.join("cifar10/cifar-10-batches-bin").exists());
}

fn png(path: &Path, side: u32, rgb: [u8; 3]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side + 4, side);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let data: Vec<u8> = (0..(side + 4) * side).flat_map(|_| rgb).collect();
    enc.write_header().unwrap().write_image_data(&data).unwrap();
}

/// A grey `w`×`h` PNG with the given value at each (x, y).
fn png_with(path: &Path, w: u32, h: u32, value: impl Fn(u32, u32) -> u8) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let data: Vec<u8> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| value(x, y)).collect();
    enc.write_header().unwrap().write_image_data(&data).unwrap();
}

/// Issue 40, item 2: a folder of images without class sub-folders and `conditioning.classes = true`
/// is refused by `plan` (as the run would refuse it when it starts), naming the file, the key and the
/// allowed value; nothing is created.
#[test]
fn plan_refuses_classes_of_a_folder_without_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, data) = (tmp.path().join("r"), tmp.path().join("data"));
    let images = tmp.path().join("flat");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..12 {
        png(&images.join(format!("{i:02}.png")), 20, [40, 40, 40]);
    }
    let body = TINY.replace(
        "[data]\n",
        &format!(
            "[data]\nname = \"image_folder\"\npath = {:?}\nchannels = 1\ntest_images = 4\n",
            images.display().to_string()
        ),
    ) + "[conditioning]\nclasses = true\n";
    let exp = tmp.path().join("flat.toml");
    std::fs::write(&exp, body).unwrap();
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results, &data);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "plan accepted it: {}", text(&out.stdout));
    assert!(err.contains("flat.toml:") && err.contains("has no classes"), "{err}");
    assert!(err.contains("allowed: conditioning.classes = false"), "{err}");
    assert!(!results.join("runs").exists());
    // Without classes the same folder plans.
    let plain = std::fs::read_to_string(&exp).unwrap().replace("classes = true", "classes = false");
    std::fs::write(&exp, plain).unwrap();
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results, &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A folder of PNGs in two class sub-folders: a class-conditional run trains on it with label
/// dropout, its samples grid has one column per class, the bound is evaluated on the held-out test
/// images, and `ddpm sample` draws one class with guidance. The decoded folder is cached.
#[test]
fn an_image_folder_trains_a_class_conditional_model_with_guidance() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, data) = (tmp.path().join("r"), tmp.path().join("data"));
    let images = tmp.path().join("images");
    for (class, rgb) in [("dark", [20u8, 20, 20]), ("light", [230, 230, 230])] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..12 {
            png(&images.join(class).join(format!("{i:02}.png")), 20, rgb);
        }
    }
    let body = TINY.replace(
        "[data]\n",
        &format!(
            "[data]\nname = \"image_folder\"\npath = {:?}\nchannels = 1\ntest_images = 4\n",
            images.display().to_string()
        ),
    ) + "[conditioning]\nclasses = true\nlabel_dropout = 0.2\n";
    let body = body.replace("[sample]\nnum_samples = 20\n", "[sample]\nnum_samples = 4\nguidance_scale = 1.5\n");
    let exp = tmp.path().join("f.toml");
    std::fs::write(&exp, &body).unwrap();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results, &data);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("decoding 24 images") || std::fs::read_dir(data.join("image-folders")).is_ok());
    let run = std::fs::read_dir(results.join("runs")).unwrap().next().unwrap().unwrap().path();
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    // The bound on the 4 held-out images.
    let eval_dir = std::fs::read_dir(run.join("eval")).unwrap().next().unwrap().unwrap().path();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["bpd"]["images"], 4, "{metrics}");
    // The evaluation's batch, left open, was the CPU's, and is stored with the spec.
    assert_eq!(metrics["eval"]["batch_size"], 64, "{metrics}");
    // samples.png: 4 samples in 2 columns (one per class) of 16-pixel images with 2-pixel padding.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(run.join("samples.png")).unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (2 * 18 + 2, 2 * 18 + 2));
    // The class embedding is in the weights: 3 rows (2 classes and "no class") of the time width.
    let weights = tch::Tensor::read_safetensors(run.join("ema.safetensors")).unwrap();
    let table = weights.iter().find(|(k, _)| k == "class_emb.weight").expect("class embedding");
    assert_eq!(table.1.size(), vec![3, 32]);

    let grid = tmp.path().join("light.png");
    let args = ["sample", run.to_str().unwrap(), "-n", "3", "--class", "1", "--guidance", "2", "--device", "cpu"];
    let out = bin().args(args).arg("--output").arg(&grid).env("DDPM_DATA_DIR", &data).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(grid.exists());
    let out = bin()
        .args(["sample", run.to_str().unwrap(), "-n", "1", "--class", "2", "--device", "cpu", "--output"])
        .arg(&grid)
        .env("DDPM_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("--class 2: allowed are 0 to 1"), "{}", text(&out.stderr));

    // Guidance without conditioning, and a folder without a test split for the bound, are errors
    // that name the key.
    let bad = body.replace("classes = true", "classes = false");
    std::fs::write(&exp, bad).unwrap();
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results, &data);
    assert!(text(&out.stderr).contains("sample.guidance_scale"), "{}", text(&out.stderr));
    let bad = body.replace("test_images = 4\n", "");
    std::fs::write(&exp, bad).unwrap();
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results, &data);
    assert!(
        text(&out.stderr).contains("data.test_images") && text(&out.stderr).contains("eval.bpd"),
        "{}",
        text(&out.stderr)
    );
}

/// Over the PNGs of a folder (grey, square): the mean of (left half − right half) and of (top half −
/// bottom half), in pixel values 0..255.
fn half_differences(dir: &Path) -> (f64, f64) {
    let (mut lr, mut tb, mut n) = (0.0, 0.0, 0.0);
    for e in std::fs::read_dir(dir).unwrap() {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(e.unwrap().path()).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h, c) = (info.width as usize, info.height as usize, info.color_type.samples());
        let at = |x: usize, y: usize| buf[(y * w + x) * c] as f64;
        let half = |pick: &dyn Fn(usize, usize) -> bool| {
            let v: Vec<f64> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| pick(x, y))
                .map(|(x, y)| at(x, y))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        lr += half(&|x, _| x < w / 2) - half(&|x, _| x >= w / 2);
        tb += half(&|_, y| y < h / 2) - half(&|_, y| y >= h / 2);
        n += 1.0;
    }
    (lr / n, tb / n)
}

/// The conditioning does what it says: on a folder of two classes, bright left halves and bright top
/// halves, a briefly trained class-conditional model draws left-bright images for class 0 and top-bright
/// ones for class 1 from the same noise, with and without guidance.
#[test]
fn class_conditional_samples_follow_their_class() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, data) = (tmp.path().join("r"), tmp.path().join("data"));
    let images = tmp.path().join("images");
    type Bright = fn(u32, u32) -> bool;
    let halves: [(&str, Bright); 2] = [("a_left", |x, _| x < 10), ("b_top", |_, y| y < 8)];
    for (class, bright) in halves {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..32u32 {
            // 20x16, center-cropped to 16x16 at load; a little variation per image.
            let v = 200 + (i % 5) as u8 * 10;
            png_with(&images.join(class).join(format!("{i:02}.png")), 20, 16, |x, y| if bright(x, y) { v } else { 20 });
        }
    }
    let body = format!(
        "seed = 3\n[data]\nname = \"image_folder\"\npath = {:?}\nchannels = 1\nimage_size = 16\n\
         [diffusion]\ntimesteps = 100\nschedule = {{ name = \"linear\", scale_to_T = true }}\n[model]\nname = \"simple\"\n\
         [train]\nsteps = 300\nbatch_size = 32\nlr = 2e-3\nlog_every = 50\ncheckpoint_every = 300\nema_decay = 0.9\n\
         [conditioning]\nclasses = true\nlabel_dropout = 0.2\n[sample]\nnum_samples = 4\n[eval]\nbpd = false\n",
        images.display().to_string()
    );
    let exp = tmp.path().join("c.toml");
    std::fs::write(&exp, body).unwrap();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results, &data);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let run = std::fs::read_dir(results.join("runs")).unwrap().next().unwrap().unwrap().path();
    let sample = |class: &str, w: &str| {
        let dir = tmp.path().join(format!("class{class}_w{w}"));
        let args = ["sample", run.to_str().unwrap(), "-n", "8", "--sampler", "ddim", "--steps", "20"];
        let out = bin()
            .args(args)
            .args(["--class", class, "--guidance", w, "--device", "cpu", "--out-dir"])
            .arg(&dir)
            .env("DDPM_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        half_differences(&dir)
    };
    for w in ["0", "2"] {
        let ((lr0, tb0), (lr1, tb1)) = (sample("0", w), sample("1", w));
        eprintln!("w = {w}: class 0 (left−right, top−bottom) = ({lr0:.1}, {tb0:.1}), class 1 = ({lr1:.1}, {tb1:.1})");
        // Each class's own pattern (about 190 bright minus dark) and not the other's.
        assert!(lr0 > 100.0 && tb0.abs() < 50.0, "w = {w}: class 0 left−right {lr0:.1}, top−bottom {tb0:.1}");
        assert!(tb1 > 100.0 && lr1.abs() < 50.0, "w = {w}: class 1 left−right {lr1:.1}, top−bottom {tb1:.1}");
    }
}
