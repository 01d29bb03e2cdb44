"""Models registered before the `pipelines.model` package still load: their MLmodel names the old loader."""
import mlflow
import numpy as np
import yaml

from pipelines.model.pyfunc_files import LOADER_MODULE, write_pyfunc_files
from pipelines.model.registry import build_model

TEXTS = ["a red square moving left", "a blue bar moving up"]


def test_a_model_naming_the_old_loader_embeds_as_one_naming_the_new(tmp_path):
    adapter = build_model("tempme-tiny-12f").save_adapter(tmp_path / "adapter")
    write_pyfunc_files(adapter)
    now = mlflow.pyfunc.load_model(str(adapter)).predict(TEXTS)
    mlmodel = adapter / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    assert meta["flavors"]["python_function"]["loader_module"] == LOADER_MODULE != "pipelines.pyfunc_model"
    meta["flavors"]["python_function"]["loader_module"] = "pipelines.pyfunc_model"
    mlmodel.write_text(yaml.safe_dump(meta))
    before = mlflow.pyfunc.load_model(str(adapter)).predict(TEXTS)
    assert before.shape == (2, now.shape[1]) and np.array_equal(before, now)
