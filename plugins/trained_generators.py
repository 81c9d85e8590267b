"""GAN generators: those shipped in weights/generators/ and those trained with
`engine train-generator` (in the user's generator folder)."""

from importlib.resources import files

from engine.hookspecs import hookimpl


@hookimpl
def register_generators(register):
    from engine.io.generator_files import as_generator, generator_dir

    shipped = files("engine_weights") / "generators"
    if shipped.is_dir():
        for resource in sorted(shipped.iterdir(), key=lambda r: r.name):
            if resource.name.endswith(".safetensors"):
                name = resource.name[: -len(".safetensors")]
                register(as_generator(name, resource, "GAN, ships with the engine"))
    folder = generator_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            if not path.name.startswith("."):  # (a temporary file of a run in progress)
                register(as_generator(path.stem, path, "GAN trained by you", from_user=True))
