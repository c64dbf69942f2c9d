"""The EDF module variants that `fastedf run` must run unchanged, and what its --explain must say.

Each directory here is one student's EDF module with a course-style script. For each variant:
- `script`, `args`, `directory`: what `python SCRIPT ARGS...` runs, from `directory` (default: the variant's
  name);
- `conventions`: for each node class fastedf must accelerate, tokens its --explain description contains
  (a tuple among the tokens means any one of its members);
- `users_code`: node classes that must stay the user's code, with a keyword the reason contains (a tuple: any
  one of them, where more than one reason is true, e.g. a BatchNorm is both unknown and stateful);
- `seconds`: the script's approximate CPU time under plain python (about its wall time on a quiet machine);
- `exit_status`: the status plain python exits with.
"""
import pathlib
from dataclasses import dataclass, field

HERE = pathlib.Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    script: str = "train.py"
    conventions: dict = field(default_factory=dict)
    users_code: dict = field(default_factory=dict)
    seconds: float = 1.0
    args: tuple = ()
    exit_status: int = 0
    directory: str = ""


VARIANTS = {
    # the instructor's module and per-sample script: (1, 1) Inputs, upstream from outputs[0] only
    "instructor_per_sample": Variant(
        conventions={"Multiply": ["Multiply"], "Addition": ["Addition"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", "gradient / rows", "no clip"]},
        seconds=2.1),
    # the batch-size study: x @ A + b, an empty last batch, np/plt/helpers from the star import
    "rows_batch_study": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=2.6),
    # Linear(x, n_in, n_out) making its own (n_out, n_in) weights; Layer/MLP helpers; XOR
    "layers_xor": Variant(
        conventions={"Linear": ["x @ A.T + b", "inputs (x, A, b)"], "ReLU": ["ReLU gradient at 0: 0"],
                     "Sigmoid": ["Sigmoid"], "BCE": ["BCE mean", "gradient / rows", "clip 1e-12"]},
        seconds=0.3),
    # samples as columns, weight first: W @ x + b; softmax and CE over columns; digits, 10 classes
    "columns_digits": Variant(
        conventions={"Linear": ["A @ x + b", "inputs (A, x, b)"], "Tanh": ["Tanh"],
                     "Softmax": ["over columns"], "CrossEntropy": ["over columns", "CE mean"]},
        seconds=1.1),
    # samples as columns, A (n_in, n_out): A.T @ x + b; BCE summed over columns, gradient not divided (with one
    # row, dividing by the rows reads the same)
    "columns_transposed": Variant(
        conventions={"Linear": ["A.T @ x + b", "inputs (x, A, b)"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", ("gradient not divided", "gradient / rows"), "clip 1e-12"]},
        seconds=0.9),
    # gradients kept per sample row, (B, n_in), averaged by the script's own sgd_update
    "per_row_gradients": Variant(
        conventions={"Linear": ["x @ A + b", "gradient per row"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE mean", "gradient not divided", "clip 1e-12"]},
        seconds=0.6),
    # a package: a per-feature scale a * x + b, then Dense(W, x, c) = x @ W + c, weight first
    "scale_layer_package": Variant(
        conventions={"Scale": ["a * x + b", ("inputs (x, a, b)", "inputs (x, A, b)")],
                     "Dense": ["x @ A + b", "inputs (A, x, b)"],
                     "Sigmoid": ["Sigmoid"], "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.35),
    # Linear(x, [W, b]); CE's backward gives (p - y) / B and Softmax (no max subtracted) passes it through;
    # a LeakyReLU fastedf does not know
    "softmax_passthrough": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"],
                     "Softmax": ["over rows", "Softmax passes the gradient through"],
                     "CE": ["over rows", "CE mean", "Softmax passes the gradient through"]},
        users_code={"LeakyReLU": "unknown"},
        seconds=2.1),
    # Linear(x, n_out, n_in) making its own Glorot-uniform weights; softmax with its explicit Jacobian; CE sum
    "softmax_jacobian": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "ReLU": ["ReLU gradient at 0: 0"],
                     "Softmax": ["over rows"], "CrossEntropy": ["over rows", "CE sum"]},
        seconds=1.1),
    # Conv(x, K, b) channels last, same padding; MaxPooling, Flatten; Softmax and CE node by node
    "conv_channels_last": Variant(
        conventions={"Conv": ["channels last", "padding same", "stride 1"],
                     "MaxPooling": ["channels last", "size 2"], "Flatten": ["Flatten"],
                     "ReLU": ["ReLU gradient at 0: 0"], "Linear": ["x @ A + b", "inputs (x, A, b)"],
                     "Softmax": ["over rows"], "CE": ["over rows", "CE mean"]},
        seconds=2.3),
    # Conv(x, C_in, C_out, kernel, stride=1, padding=1) making its own kernels, (N, C, H, W); two conv layers
    "conv_channels_first_layers": Variant(
        conventions={"Conv": ["channels first", "padding same", "stride 1"],
                     "MaxPooling": ["channels first", "size 2"], "Flatten": ["Flatten"],
                     "ReLU": ["ReLU gradient at 0: 0"], "Linear": ["x @ A + b", "inputs (x, A, b)"],
                     "Softmax": ["over rows"], "CrossEntropy": ["over rows", "CE mean"]},
        seconds=1.2),
    # Conv(x, K) without a bias, valid padding, kernels starting at zero: the first steps' values depend
    # on ReLU's gradient at 0 (here 1) and on max pooling's tie rule (the first of the window)
    "conv_nobias_valid": Variant(
        conventions={"Conv": ["channels last", "padding valid", "stride 1", "no bias"],
                     "MaxPooling": ["channels last", "size 2"], "Flatten": ["Flatten"],
                     "ReLU": ["ReLU gradient at 0: 1"], "Linear": ["x @ A + b", "inputs (x, A, b)"],
                     "Sigmoid": ["Sigmoid"], "BCE": ["BCE mean", "gradient / rows", "clip 1e-12"]},
        seconds=1.0),
    # a BCE clipping at 1e-7 on a nearly separable problem: p passes 1 - 1e-7, so the clip shows in the losses
    "bce_clip_1e7": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE mean", "gradient / rows", ("clip 1e-7", "clip 1e-07")]},
        seconds=0.9),
    # an MLP helper with BatchNorm (running statistics) and Dropout (np.random): both stay the user's code
    "dropout_batchnorm": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "ReLU": ["ReLU gradient at 0: 0"],
                     "Softmax": ["over rows"], "CE": ["over rows", "CE mean"]},
        users_code={"Dropout": ("random", "unknown"), "BatchNorm": ("state", "unknown")},
        seconds=0.9),
    # every node class defined in the script itself; x @ W without a bias, the bias an Addition node
    "script_defined_nodes": Variant(
        conventions={"MatMul": ["inputs (x, A)"], "Addition": ["Addition"], "Tanh": ["Tanh"],
                     "Sigmoid": ["Sigmoid"], "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.2),

    # every node reads its upstream gradient from outputs[0] only: a hidden layer feeding two heads loses the
    # second head's gradient (deliberately kept), and a second graph for evaluation shares the Parameters
    "first_consumer_only": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Addition": ["Addition"], "Tanh": ["Tanh"],
                     "Sigmoid": ["Sigmoid"], "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.3),
    # the first lab: Python floats in every Input and Parameter, one sample at a time; the script prints the
    # types its values have
    "per_sample_floats": Variant(
        conventions={"Multiply": ["Multiply"], "Addition": ["Addition"], "Sigmoid": ["Sigmoid"],
                     "BCE": [("BCE sum", "BCE mean")]},
        seconds=0.3),
    # Scripts and nodes that test the runner's promises rather than a convention.
    # A Linear printing from its forward: stays the user's code, its lines appear in order
    "printing_node": Variant(
        conventions={"Sigmoid": ["Sigmoid"], "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        users_code={"Linear": "prints"},
        seconds=0.1),
    # a BCE appending every value to its own history, which the script prints
    "stateful_loss": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Sigmoid": ["Sigmoid"]},
        users_code={"BCE": "state"},
        seconds=0.1),
    # a classmate's module and mine subclassing its Linear (x @ A.T + b) and Sigmoid (input clipped at 500)
    "subclassed_nodes": Variant(
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"],
                     "TransposedLinear": ["x @ A.T + b", "inputs (x, A, b)"],
                     "ReLU": ["ReLU gradient at 0: 0"], "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.2),
    "exit_status": Variant(
        directory="script_behaviour", script="exit_code.py", exit_status=3,
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Tanh": ["Tanh"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.1),
    "uncaught_exception": Variant(
        directory="script_behaviour", script="raises.py", exit_status=1,
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Tanh": ["Tanh"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.1),
    # settings from sys.argv, data read relative to the working directory, __name__ == "__main__"
    "argv_name_cwd": Variant(
        directory="script_behaviour", script="argv_cwd.py", args=("30", "1.0", "7"),
        conventions={"Linear": ["x @ A + b", "inputs (x, A, b)"], "Tanh": ["Tanh"], "Sigmoid": ["Sigmoid"],
                     "BCE": ["BCE sum", "gradient / rows", "clip 1e-12"]},
        seconds=0.1),
}
