"""Every configuration key Nightcrawler reads, with its default and a one-line description.

Defaults follow the original code (PySlowFast fork used by the UG2+ 2022 Track 2 solution); the experiment
files under ``configs/`` and ``exp_*/`` set the values the published runs used. Keys marked "[new]" do not exist
in the original: they switch on behaviour the original lacks or gets wrong, and default to the original's
behaviour.
"""

from __future__ import annotations

from yacs.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------------- TRAIN
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True  # run training before testing
_C.TRAIN.DATASET = "ug2_sparse"  # ug2_sparse: uniform segment sampling; ug2: dense sampling (expert model)
_C.TRAIN.BATCH_SIZE = 64  # videos per optimiser step over all processes (each yields AUG.NUM_SAMPLE clips)
_C.TRAIN.EVAL_PERIOD = 10  # evaluate (and adapt BN) every this many epochs
_C.TRAIN.CHECKPOINT_PERIOD = 10  # write checkpoints/checkpoint_epoch_NNNNN.pyth every this many epochs
_C.TRAIN.AUTO_RESUME = True  # resume from the newest checkpoint in OUTPUT_DIR/checkpoints when one exists
_C.TRAIN.DIST_TIMEOUT_S = 1800  # [new] seconds a collective waits for the other processes, then fails
_C.TRAIN.CHECKPOINT_FILE_PATH = ""  # weights to start from (previous stage's best.pyth, zoo file)
_C.TRAIN.CHECKPOINT_TYPE = "pytorch"  # checkpoint format (only "pytorch" is supported, as in the experiments)
_C.TRAIN.CHECKPOINT_INFLATE = False  # inflate 2-D kernels to 3-D when loading CHECKPOINT_FILE_PATH
_C.TRAIN.CHECKPOINT_EPOCH_RESET = (
    False  # start at epoch 0 with a fresh optimiser after loading CHECKPOINT_FILE_PATH
)
_C.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN = ()  # substrings removed from checkpoint keys before loading
_C.TRAIN.SAVE_LATEST = False  # keep one checkpoints/checkpoint_latest.pyth, overwritten every epoch
_C.TRAIN.THRESHOLD = 2.0  # pseudo batches: keep clips whose top-1 prob > mean - THRESHOLD*std (-1: keep all)
_C.TRAIN.PSEUDO_APPLY_THRESHOLD = (
    False  # [new] apply the THRESHOLD mask to the pseudo loss (original: computed, unused)
)
_C.TRAIN.PSEUDO_SOFT_TARGETS = (
    False  # [new] train pseudo batches on the CSV probabilities instead of hard labels
)
_C.TRAIN.PSEUDO_EPOCH_LENGTH = (
    "shorter"  # [new] pseudo epochs: "shorter" loader (original zip) or one "pseudo" pass
)
_C.TRAIN.PSEUDO_LOSS_WEIGHT = 1.0  # [new] weight of the pseudo-labelled step's loss (original: 1)
_C.TRAIN.MIXED_PRECISION = "fp16"  # [new] autocast on CUDA: fp16 (original, with grad scaler), bf16 or none
_C.TRAIN.CPU_BF16 = False  # [new] bf16 autocast when training on CPU
_C.TRAIN.EVAL_SPLITS = [
    "val_dry",
    "arid",
]  # [new] splits evaluated every EVAL_PERIOD; the last one picks best.pyth
_C.TRAIN.MAX_ITERS_PER_EPOCH = 0  # [new] cap iterations per epoch (0: the whole labelled loader)

# ---------------------------------------------------------------------------------------------------- TEST
_C.TEST = CfgNode()
_C.TEST.ENABLE = True  # run the tester after training (or alone with TRAIN.ENABLE False)
_C.TEST.DATASET = "ug2_sparse"  # sampling family of the test loader, as TRAIN.DATASET
_C.TEST.BATCH_SIZE = 8  # clips per forward over all processes
_C.TEST.CHECKPOINT_FILE_PATH = ""  # weights to test; empty: best.pyth (TEST_BEST), latest checkpoint, ...
_C.TEST.CHECKPOINT_TYPE = "pytorch"  # checkpoint format
_C.TEST.NUM_ENSEMBLE_VIEWS = 10  # temporal views per video
_C.TEST.NUM_SPATIAL_CROPS = 3  # spatial crops per view (1: centre)
_C.TEST.SAVE_RESULTS_PATH = ""  # optional extra pickle of [preds, labels] (original option)
_C.TEST.ALSO_SPLITS = []  # [new] further splits tested in the same run after DATA_SELECT (one PKL each)
_C.TEST.DATA_SELECT = "val_dry"  # split to test: test, arid, dark_unlabel, total_unlabel, val_dry, ...
_C.TEST.TEST_BEST = False  # test OUTPUT_DIR/best.pyth when TEST.CHECKPOINT_FILE_PATH is empty
_C.TEST.GAMMA = 0.25  # gamma of the dark-video correction (original: hard-coded 0.25); alias, see ENHANCE
_C.TEST.USE_GAMMA = (
    True  # the tester decodes every split with TEST.GAMMA, as the original; alias, see ENHANCE
)
_C.TEST.MAX_VIEWS_PER_FORWARD = 9  # [new] at most this many clips of one video per forward pass
_C.TEST.EXTRA_SETTINGS = []  # [new] more TTA settings from the same pass, e.g. ["1x3", "3x1", "1x1@g0.45"]
_C.TEST.SKIP_BAD_VIDEOS = False  # [new] skip (and list) undecodable test videos instead of failing
_C.TEST.CHECK_VIDEOS = (
    "auto"  # [new] pre-flight check of every test video: auto (splits > 500 videos), true, false
)
_C.TEST.CHECK_WORKERS = 0  # [new] parallel pre-flight checks (0: min(cpus, 8))
_C.TEST.PLOTS = True  # [new] write a confusion-matrix PNG beside the PKL when labels are present
_C.TEST.MIXED_PRECISION = (
    "none"  # [new] autocast on CUDA while testing: none (fp32, the original), bf16 or fp16
)
# [new] frame-order control of every test clip (the method benchmark's controls): "" frames as sampled;
# "shuffle" each clip's frames permuted in time (one permutation per video, from RNG_SEED and the video's index,
# the same for all its views and crops, never the identity); "one_frame" the clip's middle sampled frame T times.
# PKLs of a control get a suffix (_shuffle, _oneframe), so they never replace the normal ones
_C.TEST.FRAME_CONTROL = ""

# ---------------------------------------------------------------------------------------------------- DATA
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""  # unused by the UG2 datasets (kept for config compatibility)
_C.DATA.PATH_PREFIX = ""  # data root: CSVs live here, videos in the per-source folders below
_C.DATA.PATH_LABEL_SEPARATOR = " "  # CSV separator between path and label (every script passes ",")
_C.DATA.NUM_FRAMES = 8  # frames per clip
_C.DATA.SAMPLING_RATE = 8  # frame stride of dense sampling (the sparse sampler ignores it)
_C.DATA.TARGET_FPS = 30  # unused (decord path of the original has no fps conversion)
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]  # short-side jitter range when the relative lists are empty
_C.DATA.TRAIN_CROP_SIZE = 224  # training crop size
_C.DATA.TEST_CROP_SIZE = 256  # test short side and crop size
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = []  # random-resized-crop area range, e.g. [0.08, 1.0]
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = []  # random-resized-crop aspect range, e.g. [0.75, 1.3333]
_C.DATA.TRAIN_JITTER_MOTION_SHIFT = False  # motion-shift jitter (unused)
_C.DATA.INPUT_CHANNEL_NUM = [3, 3]  # input channels per pathway
_C.DATA.MEAN = [0.45, 0.45, 0.45]  # per-channel normalisation mean
_C.DATA.STD = [0.225, 0.225, 0.225]  # per-channel normalisation std
_C.DATA.RANDOM_FLIP = True  # horizontal flip during training
_C.DATA.INV_UNIFORM_SAMPLE = False  # inverse-uniform scale sampling (unused by UG2 data)
_C.DATA.REVERSE_INPUT_CHANNEL = False  # BGR input (unused: RGB)
_C.DATA.MULTI_LABEL = False  # multi-label targets (unused)
_C.DATA.ENSEMBLE_METHOD = "sum"  # per-video aggregation of clip outputs: sum (original), max, mean
_C.DATA.USE_OFFSET_SAMPLING = False  # dense test views from the start to the end of the video
_C.DATA.DECODING_BACKEND = (
    "auto"  # auto (picks a frame-exact path per file), pyav, decord, decord_GIC, torchcodec
)
_C.DATA.SPECIAL_LABEL_LIST = [5, 9]  # Run/Walk: documentary, the vote's override reads configs/ensemble
_C.DATA.PSEUDO_CSV = ""  # pseudo-label CSV relative to PATH_PREFIX (train_pseudo_label split)
_C.DATA.DECODE_THREADS = 1  # [new] decoder threads per DataLoader worker
_C.DATA.ROOT_LABELED = "labeled_train/Train"  # [new] normal-light training videos, relative to PATH_PREFIX
_C.DATA.ROOT_DRY = "dry_run/Validation"  # [new] dry-run (normal-light validation) videos
_C.DATA.ROOT_DARK = "dark_train/Train"  # [new] unlabelled dark training videos 0.mp4 ...
_C.DATA.ROOT_ARID = "ARID_v1.5/clips_v1.5"  # [new] ARID v1.5 class folders Drink/ ... Wave/
_C.DATA.ROOT_TEST = "Test"  # [new] dark test videos 0.mp4 ...
_C.DATA.ROOT_FALLBACK = (
    True  # [new] rows missing under a split's root are looked up in its other roots (data/README.md)
)
_C.DATA.CSV_TRAIN_LABEL = "train_label+val_dry.csv"  # [new] list of split train_label
_C.DATA.CSV_VAL_DRY = "val_dry.csv"  # [new] list of split val_dry
_C.DATA.CSV_ARID = "arid.csv"  # [new] list of split arid
_C.DATA.CSV_DARK_UNLABEL = "dark_unlabel.csv"  # [new] list of split dark_unlabel
_C.DATA.CSV_TOTAL_UNLABEL = "total_unlabel.csv"  # [new] list of splits train_unlabel and total_unlabel
_C.DATA.CSV_TEST = "test.csv"  # [new] list of split test
_C.DATA.TRAIN_GAMMA = (
    -1.0
)  # [new] gamma on dark training clips (-1: none, as the original); alias of ENHANCE.TRAIN_DARK
_C.DATA.DECODE_RETRIES = 3  # [new] decode attempts per video before it counts as failed

# ---------------------------------------------------------------------------------------------------- DATA_LOADER
_C.DATA_LOADER = CfgNode()
# worker processes per loader per process; -1 [new]: auto, the cores left to each process, at most 8 (original: 8)
_C.DATA_LOADER.NUM_WORKERS = -1
_C.DATA_LOADER.PIN_MEMORY = True  # pin host memory for faster transfer to the GPU
_C.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE = False  # unused

# ---------------------------------------------------------------------------------------------------- AUG
_C.AUG = CfgNode()
_C.AUG.ENABLE = False  # RandAugment + random erasing on training clips
_C.AUG.NUM_SAMPLE = 1  # augmented clips per decoded video (repeated augmentation)
_C.AUG.COLOR_JITTER = 0.4  # unused by the original pipeline
_C.AUG.AA_TYPE = "rand-m9-mstd0.5-inc1"  # timm RandAugment string
_C.AUG.INTERPOLATION = "bicubic"  # resampling of RandAugment's geometric ops
_C.AUG.RE_PROB = 0.25  # random-erasing probability
_C.AUG.RE_MODE = "pixel"  # random-erasing fill mode
_C.AUG.RE_COUNT = 1  # random-erasing boxes per clip
_C.AUG.RE_SPLIT = False  # unused

# ---------------------------------------------------------------------------------------------------- MIXUP
_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = False  # Mixup/CutMix on training batches
_C.MIXUP.ALPHA = 0.8  # Mixup Beta(alpha, alpha)
_C.MIXUP.CUTMIX_ALPHA = 1.0  # CutMix Beta(alpha, alpha)
_C.MIXUP.PROB = 1.0  # probability of mixing a batch
_C.MIXUP.SWITCH_PROB = 0.5  # probability of CutMix instead of Mixup
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1  # label smoothing of the mixed targets

# ---------------------------------------------------------------------------------------------------- BN
_C.BN = CfgNode()
_C.BN.USE_PRECISE_STATS = False  # re-estimate BN statistics on unlabelled dark videos before each evaluation
_C.BN.NUM_BATCHES_PRECISE = 200  # batches used for the re-estimation
_C.BN.WEIGHT_DECAY = 0.0  # weight decay of BatchNorm parameters
_C.BN.NORM_TYPE = "batchnorm"  # normalisation layer type (only batchnorm is used)
_C.BN.NUM_SPLITS = 1  # sub-batch norm splits (unused)
_C.BN.NUM_SYNC_DEVICES = 1  # sync-BN group size (unused)
_C.BN.SPLIT = "train_unlabel"  # [new] split whose clips re-estimate the statistics
_C.BN.GAMMA = -1.0  # [new] gamma applied to those clips (-1: none, as the original); alias of ENHANCE.BN
_C.BN.SYNC_STATS = (
    False  # [new] pool the re-estimated statistics over all processes (original: rank 0's kept)
)

# ---------------------------------------------------------------------------------------------------- SOLVER
_C.SOLVER = CfgNode()
_C.SOLVER.BASE_LR = 0.1  # peak learning rate
_C.SOLVER.LR_POLICY = "cosine"  # cosine (with linear warm-up) or steps_with_relative_lrs
_C.SOLVER.COSINE_END_LR = 0.0  # final learning rate of the cosine schedule
_C.SOLVER.COSINE_AFTER_WARMUP = False  # cosine spans MAX_EPOCH - WARMUP_EPOCHS instead of MAX_EPOCH
_C.SOLVER.GAMMA = 0.1  # step-schedule decay
_C.SOLVER.STEP_SIZE = 1  # step-schedule step size
_C.SOLVER.STEPS = []  # step-schedule epochs
_C.SOLVER.LRS = []  # step-schedule relative learning rates
_C.SOLVER.MAX_EPOCH = 300  # training epochs
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum (AdamW: unused)
_C.SOLVER.DAMPENING = 0.0  # SGD dampening
_C.SOLVER.NESTEROV = True  # SGD Nesterov momentum
_C.SOLVER.WEIGHT_DECAY = 1e-4  # weight decay of multi-dimensional parameters
_C.SOLVER.WARMUP_FACTOR = 0.1  # unused by the cosine policy
_C.SOLVER.WARMUP_EPOCHS = 0.0  # linear warm-up length in epochs
_C.SOLVER.WARMUP_START_LR = 0.01  # learning rate at epoch 0
_C.SOLVER.OPTIMIZING_METHOD = "sgd"  # sgd or adamw
_C.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False  # multiply the learning rates by NUM_SHARDS
_C.SOLVER.ZERO_WD_1D_PARAM = False  # no weight decay on 1-D parameters (biases, norm weights)
_C.SOLVER.CLIP_GRADIENT = 20.0  # clip the total gradient L2 norm (the value every original run used)
_C.SOLVER.CLIP_GRAD_L2NORM = None  # set by the MViT config; ignored unless HONOR_CLIP_GRAD_L2NORM
_C.SOLVER.HONOR_CLIP_GRAD_L2NORM = False  # [new] use CLIP_GRAD_L2NORM instead of CLIP_GRADIENT when set

# ---------------------------------------------------------------------------------------------------- MODEL
_C.MODEL = CfgNode()
_C.MODEL.ARCH = "slowfast"  # architecture family: uniformer, mvit, sf
_C.MODEL.MODEL_NAME = "Uniformer"  # registered builder: Uniformer, MViT, SF (or one registered via IMPORTS)
_C.MODEL.NUM_CLASSES = 400  # classifier outputs
_C.MODEL.LOSS_FUNC = "cross_entropy"  # soft_cross_entropy (experiments) or cross_entropy
_C.MODEL.SINGLE_PATHWAY_ARCH = [
    "2d",
    "c2d",
    "i3d",
    "slow",
    "x3d",
    "mvit",
    "uniformer",
    "sf",
]  # one input tensor
_C.MODEL.MULTI_PATHWAY_ARCH = ["slowfast"]  # list-of-pathways input
_C.MODEL.DROPOUT_RATE = 0.5  # head dropout (MViT); UniFormer and SF do not read it
_C.MODEL.DROPCONNECT_RATE = 0.0  # unused
_C.MODEL.FC_INIT_STD = 0.01  # unused by these models
_C.MODEL.HEAD_ACT = "softmax"  # activation of MViT's head in eval mode
_C.MODEL.USE_CHECKPOINT = (
    False  # UniFormer: activation checkpointing of the first CHECKPOINT_NUM blocks per stage
)
_C.MODEL.CHECKPOINT_NUM = [0, 0, 0, 0]  # blocks per stage run under activation checkpointing
_C.MODEL.ACT_CHECKPOINT = False  # MViT: activation checkpointing of every block
_C.MODEL.PSEUDO_LOSS_FUNC = (
    ""  # original's soft pseudo loss name (never enabled; see TRAIN.PSEUDO_SOFT_TARGETS)
)
_C.MODEL.SOFT_T = 1.0  # temperature of soft pseudo targets
_C.MODEL.PRETRAIN_NAME = (
    ""  # [new] zoo weights of a model whose card names no key of its own (e.g. MViT, user models)
)
_C.MODEL.PRETRAIN_DIR = ""  # [new] folder searched for UNIFORMER/SF.PRETRAIN_NAME (empty: $NIGHTCRAWLER_PRETRAIN_DIR or ./pretrained)
_C.MODEL.PRETRAIN_STRICT = True  # [new] PRETRAIN_NAME weights must match the model except the classifier (False: partial load, logged)
_C.MODEL.CHANNELS_LAST = False  # [new] Conv3d weights channels-last-3d (docs/PERFORMANCE.md "Speed-ups")
_C.MODEL.COMPILE = False  # [new] torch.compile the model in place (training, testing, prediction)
_C.MODEL.COMPILE_MODE = "default"  # [new] torch.compile mode: default, reduce-overhead, max-autotune, ...

# ---------------------------------------------------------------------------------------------------- UNIFORMER
_C.UNIFORMER = CfgNode()
_C.UNIFORMER.EMBED_DIM = [64, 128, 320, 512]  # channels per stage
_C.UNIFORMER.DEPTH = [5, 8, 20, 7]  # blocks per stage
_C.UNIFORMER.NUM_HEADS = [1, 2, 5, 8]  # not read: heads = EMBED_DIM // HEAD_DIM, as the original
_C.UNIFORMER.HEAD_DIM = 64  # channels per attention head
_C.UNIFORMER.MLP_RATIO = 4  # MLP hidden width / channels
_C.UNIFORMER.QKV_BIAS = True  # bias on the qkv projection
_C.UNIFORMER.QKV_SCALE = None  # attention scale (None: head_dim ** -0.5)
_C.UNIFORMER.REPRESENTATION_SIZE = None  # pre-logits layer width (None: none)
_C.UNIFORMER.DROPOUT_RATE = 0.0  # dropout after attention/MLP projections
_C.UNIFORMER.ATTENTION_DROPOUT_RATE = 0.0  # dropout on attention weights
_C.UNIFORMER.DROP_DEPTH_RATE = 0.1  # stochastic-depth rate of the last block (linear from 0)
_C.UNIFORMER.SPLIT = False  # split spatio-temporal attention (unused by the experiments)
_C.UNIFORMER.STD = False  # stages 2-4 patch embeddings: (3, 2, 2) kernels instead of (1, 2, 2); time kept
_C.UNIFORMER.PRETRAIN_NAME = "None"  # zoo weights (path or name in MODEL.PRETRAIN_DIR) loaded at build time
_C.UNIFORMER.ADD_MLP = True  # carried by the original tree (unused by the video model)
_C.UNIFORMER.DPE = True  # carried by the original tree (unused by the video model)
_C.UNIFORMER.KS = 5  # carried by the original tree (unused by the video model)
_C.UNIFORMER.MBCONV = False  # carried by the original tree (unused by the video model)
_C.UNIFORMER.PRUNE_RATIO = [[], [], [1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]  # unused
_C.UNIFORMER.RATIO = 1  # carried by the original tree (unused by the video model)
_C.UNIFORMER.STAGE_TYPE = [0, 0, 1, 1]  # carried by the original tree (unused by the video model)
_C.UNIFORMER.TAU = 3  # carried by the original tree (unused by the video model)
_C.UNIFORMER.TRADE_OFF = [[], [], [1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]  # unused

# ---------------------------------------------------------------------------------------------------- MVIT
_C.MVIT = CfgNode()
_C.MVIT.MODE = "conv"  # pooling operator: conv, avg or max
_C.MVIT.CLS_EMBED_ON = True  # prepend a class token
_C.MVIT.PATCH_KERNEL = [3, 7, 7]  # patch-embedding kernel
_C.MVIT.PATCH_STRIDE = [2, 4, 4]  # patch-embedding stride
_C.MVIT.PATCH_PADDING = [2, 4, 4]  # patch-embedding padding
_C.MVIT.PATCH_2D = False  # 2-D patch embedding
_C.MVIT.EMBED_DIM = 96  # token width of the first block
_C.MVIT.NUM_HEADS = 1  # heads of the first block
_C.MVIT.MLP_RATIO = 4.0  # MLP hidden width / block input width
_C.MVIT.QKV_BIAS = True  # bias on the qkv projection
_C.MVIT.DROPPATH_RATE = 0.1  # stochastic-depth rate of the last block
_C.MVIT.DEPTH = 16  # transformer blocks
_C.MVIT.NORM = "layernorm"  # normalisation layer
_C.MVIT.DIM_MUL = []  # [[block, factor], ...]: width multipliers
_C.MVIT.HEAD_MUL = []  # [[block, factor], ...]: head-count multipliers
_C.MVIT.POOL_KV_STRIDE = None  # [[block, st, sh, sw], ...]: explicit key/value pooling strides
_C.MVIT.POOL_KV_STRIDE_ADAPTIVE = None  # initial key/value stride, divided at every query-pooling block
_C.MVIT.POOL_Q_STRIDE = []  # [[block, st, sh, sw], ...]: query pooling strides
_C.MVIT.POOL_KVQ_KERNEL = None  # pooling kernel (None: stride + 1 where stride > 1)
_C.MVIT.POOL_NORM_EPS = 1e-5  # LayerNorm eps of pooled q/k/v (PySlowFast: 1e-5, torchvision mvit_v1_b: 1e-6)
_C.MVIT.ZERO_DECAY_POS_CLS = True  # no weight decay on position embeddings and the class token
_C.MVIT.NORM_STEM = False  # LayerNorm after the patch embedding
_C.MVIT.SEP_POS_EMBED = False  # separate spatial / temporal / class position embeddings
_C.MVIT.DROPOUT_RATE = 0.0  # dropout after attention/MLP projections
_C.MVIT.POOL_FIRST = False  # pool before the qkv projection

# ---------------------------------------------------------------------------------------------------- SF
_C.SF = CfgNode()
_C.SF.DEPTH = 101  # ResNet depth: 101 (3,4,23,3) or 50 (3,4,6,3); not a key of the original
_C.SF.WIDTH = 64  # slow-pathway base width (fast = WIDTH/8); not a key of the original
_C.SF.DROPOUT_RATE = 0.0  # head dropout
_C.SF.FROZEN_BN = False  # freeze BatchNorm (eval statistics, fixed affine)
_C.SF.PRETRAIN_NAME = "None"  # AlphAction weights (path or name in MODEL.PRETRAIN_DIR) loaded at build time
_C.SF.NONLOCAL = CfgNode()
_C.SF.NONLOCAL.FROZEN_BN = False  # carried by the original tree (no non-local blocks are built)

# ---------------------------------------------------------------------------------------------------- SLOWFAST
_C.SLOWFAST = CfgNode()
_C.SLOWFAST.ALPHA = 8  # frame-rate ratio of the generic two-pathway packing (the SF model ignores it)
_C.SLOWFAST.BETA_INV = 8  # channel ratio (generic SlowFast; unused)
_C.SLOWFAST.FUSION_CONV_CHANNEL_RATIO = 2  # lateral channel ratio (generic SlowFast; unused)
_C.SLOWFAST.FUSION_KERNEL_SZ = 5  # lateral kernel (generic SlowFast; unused)

# ---------------------------------------------------------------------------------------------------- TENSORBOARD
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False  # write TensorBoard scalars (loss, lr, accuracy) to LOG_DIR
_C.TENSORBOARD.LOG_DIR = ""  # TensorBoard folder relative to OUTPUT_DIR (empty: runs-<dataset>)

# ---------------------------------------------------------------------------------------------------- ENHANCE
# [new] the low-light enhancement of each phase, as a spec ``NAME`` or ``NAME:key=value,...`` of an enhancement
# registered in nightcrawler/data/enhance.py (``none``, ``gamma:value=0.25``). Empty: the original's keys decide
# (TEST.GAMMA with TEST.USE_GAMMA, BN.GAMMA, DATA.TRAIN_GAMMA, the *_GIC backends).
_C.ENHANCE = CfgNode()
_C.ENHANCE.TEST = ""  # every split the tester reads (alias: TEST.GAMMA if TEST.USE_GAMMA)
_C.ENHANCE.EVAL = ""  # dark splits evaluated during training (alias: TEST.GAMMA)
_C.ENHANCE.BN = ""  # the clips that re-estimate BatchNorm statistics (alias: BN.GAMMA)
_C.ENHANCE.TRAIN_DARK = ""  # dark training clips, unlabelled or pseudo-labelled (alias: DATA.TRAIN_GAMMA)

# ---------------------------------------------------------------------------------------------------- TENT
# [new] test-time entropy minimisation (nightcrawler/engine/tent.py): after the BN statistics, the BatchNorm
# affine parameters are tuned to lower the prediction entropy on unlabelled dark clips (tester, tools/adapt_bn.py).
_C.TENT = CfgNode()
_C.TENT.ENABLE = False  # [new] run TENT on the test model / the adapted checkpoint
_C.TENT.STEPS = 50  # [new] optimiser steps (one batch each)
_C.TENT.LR = 2.5e-4  # [new] learning rate of the BatchNorm weights and biases (TENT's ImageNet SGD rate)
_C.TENT.BATCH_SIZE = 8  # [new] videos per step over all processes (a multiple of the processes)
_C.TENT.SPLIT = "train_unlabel"  # [new] split of the unlabelled clips (the BN adaptation split by default)
_C.TENT.OPTIMIZER = "sgd"  # [new] sgd (momentum 0.9, as TENT) or adam
_C.TENT.BN_MODE = "fixed"  # [new] normalise with the fixed adapted statistics, or "batch" statistics (TENT)

# ---------------------------------------------------------------------------------------------------- DISTILL
# [new] dual-light distillation (nightcrawler/engine/distill.py): a frozen teacher sees each training clip
# enhanced, the student the same clip raw, and the student's loss adds the teacher's softened predictions.
_C.DISTILL = CfgNode()
_C.DISTILL.ENABLE = False  # [new] distil a frozen teacher on enhanced clips into the student on raw clips
_C.DISTILL.TEACHER_CFG = ""  # [new] config file of the teacher (empty: the student's own config)
_C.DISTILL.TEACHER_CHECKPOINT = ""  # [new] the teacher's trained weights (required, loaded strictly)
_C.DISTILL.TEACHER_ENHANCEMENT = "gamma:value=0.25"  # [new] enhancement spec of the teacher's copy of a clip
_C.DISTILL.TEMPERATURE = 4.0  # [new] softmax temperature of teacher and student in the soft loss
_C.DISTILL.ALPHA = 0.5  # [new] loss = (1 - ALPHA) * label loss + ALPHA * T^2 * KL(teacher || student)
_C.DISTILL.SPLITS = ["train_pseudo_label"]  # [new] batches distilled: train_pseudo_label and/or train_label

# ---------------------------------------------------------------------------------------------------- global
_C.IMPORTS = []  # [new] Python modules (names, or .py files) imported before anything is built: user models,
# enhancements and pseudo-label rules register themselves there
_C.NUM_GPUS = 1  # GPUs (= processes) per machine; 0 runs on the CPU
_C.NUM_SHARDS = 1  # machines
_C.SHARD_ID = 0  # index of this machine
_C.OUTPUT_DIR = "./tmp"  # checkpoints, logs and PKLs
_C.RNG_SEED = 1  # seed of torch, numpy and Python's random in every process and worker
_C.LOG_PERIOD = 10  # iterations between progress lines
_C.LOG_MODEL_INFO = True  # log parameter count and FLOPs at start
_C.DIST_BACKEND = "nccl"  # torch.distributed backend on GPUs (gloo is used on the CPU)
_C.CPU_THREADS = (
    0  # [new] torch threads per CPU process (0: cores / processes - DataLoader workers, at least 1)
)
_C.NUM_CPU_PROCESSES = 1  # [new] processes when NUM_GPUS is 0 (gloo); > 1 exercises the distributed path


# ---------------------------------------------------------------------------------------------------- LEGACY
# Keys of the original's tree that nothing reads. Config files and overrides may still set them under their old
# names (the loader warns once per key, naming it); their values are kept under LEGACY.<SECTION>.<KEY>.
LEGACY_KEYS = (
    "DATA.PATH_TO_DATA_DIR",
    "DATA.TARGET_FPS",
    "DATA.TRAIN_JITTER_MOTION_SHIFT",
    "DATA.INV_UNIFORM_SAMPLE",
    "DATA.REVERSE_INPUT_CHANNEL",
    "DATA.MULTI_LABEL",
    "DATA.SPECIAL_LABEL_LIST",
    "DATA_LOADER.ENABLE_MULTI_THREAD_DECODE",
    "AUG.COLOR_JITTER",
    "AUG.RE_SPLIT",
    "BN.NUM_SPLITS",
    "BN.NUM_SYNC_DEVICES",
    "BN.NORM_TYPE",
    "SOLVER.WARMUP_FACTOR",
    "SOLVER.GAMMA",
    "SOLVER.STEP_SIZE",
    "MODEL.ARCH",
    "MODEL.SINGLE_PATHWAY_ARCH",
    "MODEL.MULTI_PATHWAY_ARCH",
    "MODEL.LOSS_FUNC",  # the loss is always soft-target cross-entropy (hard labels are one-hot targets)
    "MODEL.DROPCONNECT_RATE",
    "MODEL.FC_INIT_STD",
    "MODEL.PSEUDO_LOSS_FUNC",
    "MVIT.POOL_FIRST",
    "UNIFORMER.NUM_HEADS",  # heads are EMBED_DIM // HEAD_DIM, as the original
    "UNIFORMER.ADD_MLP",
    "UNIFORMER.DPE",
    "UNIFORMER.KS",
    "UNIFORMER.MBCONV",
    "UNIFORMER.PRUNE_RATIO",
    "UNIFORMER.RATIO",
    "UNIFORMER.STAGE_TYPE",
    "UNIFORMER.TAU",
    "UNIFORMER.TRADE_OFF",
    "SLOWFAST.ALPHA",
    "SLOWFAST.BETA_INV",
    "SLOWFAST.FUSION_CONV_CHANNEL_RATIO",
    "SLOWFAST.FUSION_KERNEL_SZ",
)
_C.LEGACY = CfgNode()
for _full in LEGACY_KEYS:
    _section, _key = _full.split(".")
    if _section not in _C.LEGACY:
        _C.LEGACY[_section] = CfgNode()
    _C.LEGACY[_section][_key] = _C[_section].pop(_key)


def get_cfg() -> CfgNode:
    """A fresh copy of the default configuration tree."""
    from nightcrawler.config.loading import NightcrawlerCfgNode

    return NightcrawlerCfgNode(_C.clone())
