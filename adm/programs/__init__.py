"""The programs behind `adm sample`, `adm upsample` and `adm merge`: shards, batches, npz output."""
