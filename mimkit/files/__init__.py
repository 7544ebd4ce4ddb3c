"""Floor 0: files on disk, read and written safely, with no opinion about models or training.

- atomic:            files that appear whole or not at all (temporary file, fsync, os.replace).
- integrity:         checksums.sha256 beside weight files (written at save, verified at load) and the
                     refusal of non-finite weights.
- state_dicts:       safe reading of other projects' weight files (safetensors, or torch.load with
                     weights_only=True) and safetensors writing.
- checkpoint_folder: mimkit checkpoint folders: names, the latest complete checkpoint of a run, what
                     a user passes as CKPT, strict verified loading of the weights.
- pretrained_folder: save_pretrained folders (weights + config.json + model card) and Hugging Face
                     cache lookups, offline.
"""
