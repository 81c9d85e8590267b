"""The any-painting network that ships with the engine (weights/universal/), and the ones you
trained with `engine train-universal` (your engine folder's painting-networks/)."""

from importlib.resources import files

from engine.hookspecs import hookimpl
from engine.registry import PaintingNet


@hookimpl
def register_painting_networks(register):
    from engine.training.runs import painting_network_dir

    shipped = files("engine_weights") / "universal" / "universal.safetensors"
    if shipped.is_file():
        register(PaintingNet("universal", shipped, "ships with the engine"))
    folder = painting_network_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            if not path.name.startswith("."):
                register(PaintingNet(path.stem, path, "trained by you", from_user=True))
