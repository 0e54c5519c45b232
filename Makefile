# Two commands on a fresh machine:
#   make run    install everything, then run the main job
#   make test   install everything, then run the test suite
PYTHON ?= python3
VENV ?= .venv
# The torch build to install first; the package's own range (torch>=2.2,<2.15) then adds nothing.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data run test clean models-teacher models-prior models-prior-6k models-prior-classes0-4 models-prior-classes5-9 \
	models-prior-classes-even

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY) data
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"

# Fashion-MNIST from Debian's package, where apt exists (root or sudo).
data:
	@if [ -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ] || [ -f $(FMNIST)/t10k-labels-idx1-ubyte ]; then \
		echo "Fashion-MNIST found in $(FMNIST)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "no apt-get: put the Fashion-MNIST IDX files in $(FMNIST) or set data.root"; \
	fi

# Main job: distillation on Fashion-MNIST with the shipped teacher and prior (60 rounds, 3,840 images: about
# 10 minutes on 2 idle CPU cores), ending with the teacher/student table.
run: install
	$(VENV)/bin/fastad distill

# Regenerate the shipped Fashion-MNIST teacher (resnet20 on train[0:50000]; ~25-40 min on 2 cores).
models-teacher: install
	$(VENV)/bin/fastad train-teacher --config configs/fashion_mnist.yaml --out runs/teacher-fmnist-resnet20
	mkdir -p models/fmnist_teacher_resnet20
	cp runs/teacher-fmnist-resnet20/teacher.safetensors runs/teacher-fmnist-resnet20/config.yaml models/fmnist_teacher_resnet20/

# Regenerate the shipped prior: train[50000:60000] (the images the teacher never saw), no labels (~1 h on 2 cores).
models-prior: install
	$(VENV)/bin/fastad train-diffusion --config configs/fashion_mnist.yaml --set "data.train_range=[50000,60000]" \
		--set run.threads=1 --out runs/prior-fmnist-50k60k
	rm -rf models/fmnist_prior_50k60k
	cp -r runs/prior-fmnist-50k60k/prior models/fmnist_prior_50k60k

# Regenerate the in-domain prior of the main job: the shipped prior above, trained 3,000 steps more from its
# weights (fresh AdamW state and lr warm-up; ~50 min on 2 cores).
models-prior-6k: install
	$(VENV)/bin/fastad train-diffusion --config configs/fashion_mnist.yaml --set "data.train_range=[50000,60000]" \
		--set diffusion.init_from=models/fmnist_prior_50k60k --set run.threads=2 --out runs/prior-fmnist-50k60k-6k
	rm -rf models/fmnist_prior_50k60k_6k
	cp -r runs/prior-fmnist-50k60k-6k/prior models/fmnist_prior_50k60k_6k

# Regenerate the out-of-domain prior: train[50000:60000] restricted to classes 0-4, no labels (~1 h on 2 cores).
models-prior-classes0-4: install
	$(VENV)/bin/fastad train-diffusion --config configs/fashion_mnist.yaml --set "data.train_range=[50000,60000]" \
		--set "data.classes=[0,1,2,3,4]" --set run.threads=1 --out runs/prior-fmnist-50k60k-c0to4
	rm -rf models/fmnist_prior_50k60k_classes0-4
	cp -r runs/prior-fmnist-50k60k-c0to4/prior models/fmnist_prior_50k60k_classes0-4

# Two more out-of-domain priors, for choosing the out-of-domain recipe on more than one class split
# (same images, steps and settings; ~1 h each on one core of the 2-core machine).
models-prior-classes5-9: install
	$(VENV)/bin/fastad train-diffusion --config configs/fashion_mnist.yaml --set "data.train_range=[50000,60000]" \
		--set "data.classes=[5,6,7,8,9]" --set run.threads=1 --out runs/prior-fmnist-50k60k-c5to9
	rm -rf models/fmnist_prior_50k60k_classes5-9
	cp -r runs/prior-fmnist-50k60k-c5to9/prior models/fmnist_prior_50k60k_classes5-9

models-prior-classes-even: install
	$(VENV)/bin/fastad train-diffusion --config configs/fashion_mnist.yaml --set "data.train_range=[50000,60000]" \
		--set "data.classes=[0,2,4,6,8]" --set run.threads=1 --out runs/prior-fmnist-50k60k-even
	rm -rf models/fmnist_prior_50k60k_classes0-2-4-6-8
	cp -r runs/prior-fmnist-50k60k-even/prior models/fmnist_prior_50k60k_classes0-2-4-6-8

test: install
	$(PY) -m pytest tests --durations=15

clean:
	rm -rf $(VENV) runs .pytest_cache
