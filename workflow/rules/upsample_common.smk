# The upsampling stage's settings, paths and argument helpers (its rules: upsample.smk).
# Included after common.smk (out, flag_values, scale_name, respacing_spec) and before report.smk
# (report_html takes upsample_report_inputs).

UPSAMPLE = config["upsample"]
UPSAMPLE_ON = UPSAMPLE["enabled"]
UP_PRESET = UPSAMPLE["model"]["preset"]
UP_LOW = UPSAMPLER_LOW_RES[UP_PRESET]
UP_HIGH = get_preset(UP_PRESET).image_size
UP_DOWNSAMPLE = UP_LOW != config["image_size"]  # the demo arrangement
UP_SCALES = [scale_name(s) for s in UPSAMPLE["scales"]] if UPSAMPLE_ON else []
UP_SHARDS = list(range(UPSAMPLE["num_shards"]))
UP_BASELINE = "bicubic"  # adm.upsample.interpolate_npz: the table's interpolation row


def upsampler_checkpoint():
    """Trained here (upsample/model/ema.pt), downloaded (pretrained/upsampler.pt) or a local path."""
    if not UPSAMPLE["pretrained"]:
        return out("upsample/model/ema.pt")
    return local_upsampler() or out("pretrained/upsampler.pt")


def local_upsampler():
    """upsample.checkpoint when it is a local file path (contains a separator), else None."""
    value = UPSAMPLE["checkpoint"]
    return value if os.sep in value else None


def upsampler_flags():
    """OpenAI's released file carries no JSON: name its preset (config and low-res size)."""
    return flag_values("--model-preset", UP_PRESET) if UPSAMPLE["pretrained"] else []


def upsample_low_res(wildcards):
    """What the upsampler reads: the base samples, or (demo) their area-downsampled copies."""
    if UP_DOWNSAMPLE:
        return out(f"upsample/lowres/scale{wildcards.scale}.npz")
    return out(f"samples/scale{wildcards.scale}.npz")


def upsample_reference():
    """The reference batch at the high resolution (the demo's is its own 8x8 one)."""
    return out("upsample/reference/ref.npz") if IMAGENET else out("reference/ref.npz")


def upsample_targets():
    """final_targets' share: the table, the grids and every shard (a deleted shard re-runs)."""
    if not UPSAMPLE_ON:
        return []
    shards = expand(
        out("upsample/samples/scale{scale}/shard{shard}.npz"),
        scale=UP_SCALES,
        shard=UP_SHARDS,
    )
    return [out("upsample/upsample_table.md"), *upsample_grids(), *shards]


def upsample_grids():
    """Grids at both resolutions: the low-res input (demo) and the upsampled output per scale."""
    grids = expand(out("upsample/grids/scale{scale}.png"), scale=UP_SCALES)
    if UP_DOWNSAMPLE:
        grids += expand(out("upsample/grids/lowres_scale{scale}.png"), scale=UP_SCALES)
    return grids


def upsample_report_inputs(wildcards):
    """report_html's extra inputs (none when the stage is off)."""
    if not UPSAMPLE_ON:
        return {}
    return {
        "upsample_table": out("upsample/upsample_table.csv"),
        "upsample_base": expand(out("metrics/scale{scale}.json"), scale=UP_SCALES),
        "upsample_metrics": expand(
            out("upsample/metrics/scale{scale}.json"), scale=UP_SCALES
        ),
        "upsample_interpolated": expand(
            out("upsample/bicubic_metrics/scale{scale}.json"), scale=UP_SCALES
        ),
        "upsample_base_grids": expand(out("grids/scale{scale}.png"), scale=UP_SCALES),
        "upsample_grids": upsample_grids(),
    }


def upsample_arrangement():
    """The sizes the report and table label (adm.report.upsample.Arrangement fields)."""
    return {
        "base_size": config["image_size"],
        "low_size": UP_LOW,
        "high_size": UP_HIGH,
        "compare_paper": IMAGENET and config["image_size"] == 128 and UP_HIGH == 512,
    }
