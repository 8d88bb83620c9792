"""The `adm` command's help texts: each program's description and examples, (description, epilog).

They keep their line breaks (argparse's RawDescriptionHelpFormatter); docs/cli.md is generated from
them (python docs/gen_cli.py), and tests/programs/test_cli_docs.py parses every example so a
renamed flag cannot leave a stale one. Kept apart from adm/cli.py so the parser reads on one screen.
"""

HELP_TEXTS: dict[str, tuple[str, str]] = {
    "adm": (
        """\
Train, sample, upsample and merge ADM diffusion models (Dhariwal & Nichol 2021). Each command
parses its flags and calls one library function. `python -m adm` is the same program (an alias).
User errors print one line "error: ..." and exit 2; a diverged training run exits 3.""",
        """\
examples:
  # the digits demo on CPU: data, a diffusion model (800 steps), 500 unguided samples
  adm prepare-data --dataset digits --out-train data/train.npz --out-heldout data/heldout.npz
  adm train-diffusion --data data/train.npz --out-dir models/diffusion --model-preset demo-digits
  adm sample --model models/diffusion/ema.pt --num-samples 500 --respacing 25 --out samples.npz

  # each command's flags and examples
  adm <command> --help
""",
    ),
    "prepare-data": (
        """\
Write training images (and optionally a held-out split) as npz: arr_0 uint8 [N,H,W,3], arr_1
int64 labels. digits: scikit-learn's 1,797 8x8 digits. imagenet: decode + center-crop every image
of a folder (one subfolder per class; label = sorted folder names) once into an uncompressed npz
that training memory-maps; --threads decode processes; a killed run resumes.""",
        """\
examples:
  # the demo's data: 8x8 digits, 20% held out (reference batch, classifier accuracy)
  adm prepare-data --dataset digits --out-train data/train.npz --out-heldout data/heldout.npz

  # ImageNet at 128x128, 1% held out, 8 decode processes
  adm prepare-data --dataset imagenet --data-dir /data/imagenet/train --image-size 128 \\
      --out-train data/train.npz --out-heldout data/heldout.npz --heldout-fraction 0.01 \\
      --threads 8
""",
    ),
    "train-diffusion": (
        """\
Train the diffusion UNet on L_hybrid = L_simple + 0.001 L_vlb (Nichol & Dhariwal 2021). Writes
ema.pt (the first EMA rate), ema_<rate>.pt and log.csv to --out-dir; the same command resumes from
its checkpoint.pt. Hyperparameters come from the training preset (--train-preset, default: the
model preset's name when a training preset has it); each flag below overrides one of them.
Several GPUs: launch with torchrun (python -m torch.distributed.run), one process per GPU.""",
        """\
examples:
  # the demo model on 8x8 digits (training preset demo-digits: 800 steps)
  adm train-diffusion --data data/train.npz --out-dir models/diffusion --model-preset demo-digits

  # a model for classifier-free guidance: the main model fine-tuned for 300 steps with each label
  # dropped with probability 0.1 (without --init-from: a fresh model trained for the preset's steps)
  adm train-diffusion --data data/train.npz --out-dir models/cfg --model-preset demo-digits \\
      --label-dropout 0.1 --init-from models/diffusion/ema.pt --steps 300 --lr-anneal-steps 300

  # ImageNet 128x128 on 8 GPUs with the paper's hyperparameters (global batch 256)
  python -m torch.distributed.run --standalone --nproc_per_node 8 -m adm train-diffusion \\
      --data data/train.npz --out-dir models/diffusion --model-preset imagenet128-cond \\
      --train-preset imagenet128 --device cuda
""",
    ),
    "train-upsampler": (
        """\
Train a super-resolution UNet; its low-res condition is each training image area-downsampled to
--low-res-size (default: the preset's). Writes ema.pt, ema_<rate>.pt, model.pt and log.csv to
--out-dir and resumes like train-diffusion; train-diffusion's training flags apply.""",
        """\
examples:
  # the demo's 4x4 -> 8x8 upsampler (training preset demo-upsample: 400 steps)
  adm train-upsampler --data data/train.npz --out-dir models/upsampler \\
      --model-preset demo-upsample

  # the same for longer, on two CPU threads
  adm train-upsampler --data data/train.npz --out-dir models/upsampler-2k \\
      --model-preset demo-upsample --steps 2000 --lr-anneal-steps 2000 --threads 2
""",
    ),
    "train-classifier": (
        """\
Train the noisy-image classifier p(y | x_t, t) that guides sampling. Writes model.pt and log.csv
to --out-dir (with --heldout, accuracy on held-out images); resumes like train-diffusion.""",
        """\
examples:
  # the demo's classifier, with the demo config's shorter schedule (300 steps)
  adm train-classifier --data data/train.npz --heldout data/heldout.npz \\
      --out-dir models/classifier --model-preset demo-digits-classifier \\
      --steps 300 --lr-anneal-steps 300

  # ImageNet 128x128 on 8 GPUs (training preset imagenet128-classifier: 300k steps, lr 3e-4)
  python -m torch.distributed.run --standalone --nproc_per_node 8 -m adm train-classifier \\
      --data data/train.npz --heldout data/heldout.npz --out-dir models/classifier \\
      --model-preset imagenet128-classifier --device cuda
""",
    ),
    "sample": (
        """\
Guided DDPM/DDIM samples for one shard: shard k of n holds sample indices [k*N//n, (k+1)*N//n),
and image i's noise and label depend on (--seed, i) only, so the merged shards do not depend on
the shard count or batch size. Writes arr_0 uint8 [n,H,W,3], arr_1 labels and the indices to
--out, the resolved config as JSON beside it. OpenAI's checkpoints carry no JSON: name presets.
Autoguidance: --guidance autoguidance --guide-model G --scale W (W >= 1), e.g. G = the main
model's ema_step<N>.pt kept by train-diffusion --keep-ema-step N.""",
        """\
examples:
  # the demo model guided by its classifier at scale 1.0, 25 DDPM steps
  adm sample --model models/diffusion/ema.pt --classifier models/classifier/model.pt \\
      --scale 1.0 --respacing 25 --num-samples 500 --out samples/scale1.0.npz

  # Table 1's ImageNet 128x128: OpenAI's 128x128_diffusion.pt and 128x128_classifier.pt,
  # scale 1.0, 250 steps, fp16 on the GPU; shard 0 of 10 of 50,000 samples
  adm sample --model 128x128_diffusion.pt --model-preset imagenet128-cond \\
      --classifier 128x128_classifier.pt --classifier-preset imagenet128-classifier \\
      --scale 1.0 --respacing 250 --num-samples 50000 --shard 0 --num-shards 10 \\
      --batch-size 250 --precision auto --device cuda --out samples/scale1.0/shard0.npz

  # classifier-free guidance of a model trained with --label-dropout: w = 2, 25 DDIM steps
  adm sample --model models/cfg/ema.pt --guidance cfg --scale 2.0 --respacing ddim25 \\
      --num-samples 500 --out samples/cfg2.0.npz
""",
    ),
    "upsample": (
        """\
Super-resolution samples of a low-res npz, for one shard (indices as in sample); image i's noise
depends on (--seed, i) only. Writes the same npz format at the model's resolution, the resolved
config as JSON beside it. OpenAI's upsampler carries no JSON: name its preset.""",
        """\
examples:
  # the demo upsampler on 4x4 images (8x8 samples area-downsampled), 25 DDPM steps
  adm upsample --model models/upsampler/ema.pt --low-res samples4x4.npz --respacing 25 \\
      --out upsampled.npz

  # OpenAI's 128 -> 512 upsampler on merged 128x128 samples: shard 0 of 50, fp16 on the GPU
  adm upsample --model 128_512_upsampler.pt --model-preset upsample128-512 \\
      --low-res samples/scale1.0.npz --shard 0 --num-shards 50 --batch-size 16 \\
      --precision auto --device cuda --out upsampled/scale1.0/shard0.npz
""",
    ),
    "merge": (
        """\
Concatenate sample shards in global-index order into one npz (arr_0 images, arr_1 labels).
Every index 0..N-1 must appear exactly once; the shards may be given in any order.""",
        """\
examples:
  # the two shards of a 500-sample run
  adm merge --out samples/scale1.0.npz --num-samples 500 \\
      samples/scale1.0/shard0.npz samples/scale1.0/shard1.npz

  # ten ImageNet shards (the shell expands the glob); labels must lie in 0..999
  adm merge --out samples/scale1.0.npz --num-samples 50000 --num-classes 1000 \\
      samples/scale1.0/shard*.npz
""",
    ),
    "features-dinov2": (
        """\
DINOv2 ViT-L/14 CLS features of every image of an npz, for FD_DINOv2 (Stein et al. 2023), with
dgm-eval's preprocessing (PIL bicubic resize to 224, ImageNet mean/std; adm/features/dinov2.py).
Streams the images in batches; writes `features` float32 [N, 1024] and a `meta` record to --out.
--weights: the official dinov2_vitl14_pretrain.pth (weights of another architecture are refused).
The distance: python -m evaluations.fd_features REF_FEATS.npz SAMPLE_FEATS.npz.""",
        """\
examples:
  # features of a sample batch and of the reference on a GPU, cached by content
  adm features-dinov2 --images samples/scale1.0.npz --weights dinov2_vitl14_pretrain.pth \\
      --out dinov2/scale1.0.npz --device cuda --cache-dir .cache/evaluations
  adm features-dinov2 --images reference/ref.npz --weights dinov2_vitl14_pretrain.pth \\
      --out dinov2/reference.npz --device cuda --cache-dir .cache/evaluations
""",
    ),
}
