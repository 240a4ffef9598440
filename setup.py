"""Package metadata. Dependencies are pinned in requirements/lock.txt (see Makefile)."""

from setuptools import find_packages, setup

PACKAGES = ("contract", "config", "pipeline", "components", "trainer", "ingest", "reporting", "inference",
            "traffic", "monitoring", "orchestration", "cli")

setup(
    name="cats-vs-dogs-tfx",
    version="0.1.0",
    description="TFX pipeline that trains, validates and ships a MobileNetV2 cat/dog classifier.",
    python_requires=">=3.11,<3.12",
    # Every package a pipeline task imports (TFX loads the model code by module path inside the image).
    packages=find_packages(include=[f"{name}{suffix}" for name in PACKAGES for suffix in ("", ".*")]),
    package_data={"pipeline": ["schema/*.pbtxt"], "reporting": ["templates/*.j2"]},
    py_modules=["pipeline_runner"],
    entry_points={"console_scripts": ["cats-vs-dogs = pipeline_runner:entry_point"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-datasets==4.9.10",
        "kfp==2.13.0",
        "kfp-kubernetes==1.5.0",
        "pillow",
        "matplotlib",
        "ai-edge-litert",
    ],
)
