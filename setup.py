from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="ernie-marketing",
    version="0.1.0",
    description="Multi-task learning on a shared ERNIE encoder for marketing "
    "decisions, on PaddlePaddle.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ernie_marketing", "ernie_marketing.*"]),
    python_requires=">=3.9",
    # Tested versions are pinned in constraints.txt; these ranges are what
    # the code needs. PaddleNLP 3.0.0b4 imports only with aistudio-sdk < 0.3,
    # datasets 3.2.x and pyarrow < 18.
    install_requires=[
        "paddlepaddle>=3.0",
        "paddlenlp>=3.0.0b4",
        # Word segmentation for knowledge masking, also installed by PaddleNLP.
        "jieba>=0.42",
        "aistudio-sdk<0.3",
        "datasets>=3.2,<3.3",
        "pyarrow<18",
        "numpy>=1.24,<2",
        "pandas>=2.0",
        "pyyaml>=6.0",
        "scikit-learn>=1.3",
        # scipy.optimize.milp (HiGHS) solves the exact allocation.
        "scipy>=1.9",
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "visualdl>=2.5",
    ],
    extras_require={
        # selenium drives the system Chromium in the report test.
        "test": ["pytest>=7.0", "ruff==0.8.6", "selenium>=4.10"],
    },
    entry_points={
        "console_scripts": ["ernie-marketing=ernie_marketing.cli:main"],
    },
)
