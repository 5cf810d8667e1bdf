"""An offline bundle: what a GPU host without network needs to run the recipe, in parts of a chosen size.

The host brings the repository, Python, torch and transformers (a CUDA host has them with its driver's
build); the bundle brings the rest: the Python packages as wheels, the SmolLM2 base model (its GGUF) and the
papers' splits, each file and each part with its SHA-256. Parts are cut to a size the user picks (an upload
limit, a USB stick), and `bundle.json` lists them.

    binllm bundle --data ../shared/data/ml-1m-collm --out bundle --part-size 48MiB   # on a machine with network
    python3 -m model_store.bundle unpack bundle --dest runs/bundle                   # on the GPU host (stdlib)

`scripts/gpu_recipe.sh` unpacks a bundle when it finds one, then tunes, exports and evaluates.
"""
