"""Package metadata. Dependencies are pinned in requirements/lock.txt (see Makefile)."""

from setuptools import find_packages, setup

setup(
    name="cats-vs-dogs-tfx",
    version="0.1.0",
    description="TFX pipeline that trains, validates and ships a MobileNetV2 cat/dog classifier.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*", "trainer",
                                    "trainer.*", "ingest", "ingest.*", "reporting", "reporting.*"]),
    package_data={"pipeline": ["schema/*.pbtxt"]},
    py_modules=["pipeline_runner"],
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-datasets==4.9.10",
        "kfp==2.13.0",
        "pillow",
        "matplotlib",
    ],
)
