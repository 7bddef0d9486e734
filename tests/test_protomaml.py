"""ProtoMAML (metabook_learn/protomaml.py): its head, its meta-gradient, and training and evaluation through the
protocol, the API and the command line; and a copy of its file outside the package, as book/add-your-own-method.md
makes one, trained and evaluated as a method of one's own."""
import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from meta_fixtures import WAYS, random_tasks

from metabook_learn import methods
from metabook_learn.cli import main
from metabook_learn.inner_loop import InnerLoop, parameters_of, predict
from metabook_learn.models import ConvNet

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILE = ROOT / "metabook_learn" / "protomaml.py"


@pytest.fixture(scope="module")
def protomaml():
    return methods.get("protomaml"), importlib.import_module("metabook_learn.protomaml")


def copy_outside(folder: Path, name: str | None = "my-protomaml") -> str:
    """What the page does: copy the method's file, give the copy its own name; its ``--method`` spec."""
    copy = folder / "my_protomaml.py"
    text = PACKAGE_FILE.read_text()
    assert text.count('name="protomaml"') == 1
    copy.write_text(text if name is None else text.replace('name="protomaml"', f'name="{name}"'))
    return f"{copy}:PROTOMAML"


def tiny_network(module, seed: int = 0):
    torch.manual_seed(seed)
    embedding = ConvNet(None, in_channels=1, filters=4, downsample="stride", image_size=8, blocks=2)
    return module.ProtoMAMLNetwork(embedding, WAYS).double()


def test_it_is_one_of_the_package_methods(protomaml):
    method, module = protomaml
    assert "protomaml" in methods.names() and methods.origin("protomaml") == "metabook_learn.protomaml"
    assert method is module.PROTOMAML


def test_a_copy_outside_the_package_registers_under_its_own_name_and_only_so(tmp_path, protomaml):
    # Each test registers its copy under a name of its own: one process holds one method per name.
    spec = copy_outside(tmp_path, "copied-protomaml")
    copy = methods.load(spec)
    assert methods.get("copied-protomaml") is copy and methods.origin("copied-protomaml") == spec
    assert methods.get("protomaml") is protomaml[0]  # the package's own is untouched
    assert methods.load(spec) is copy  # loading twice is harmless
    (tmp_path / "unrenamed").mkdir()
    unrenamed = copy_outside(tmp_path / "unrenamed", name=None)
    with pytest.raises(ValueError, match="a method named 'protomaml' is already registered.*give yours another name"):
        methods.load(unrenamed)


def test_the_head_starts_as_the_prototypical_classifier_in_closed_form(protomaml):
    _, module = protomaml
    model, tasks = tiny_network(module), random_tasks(1, shots=3)
    sx, sy, qx = tasks.support_x[0], tasks.support_y[0], tasks.query_x[0]
    weight, bias = module.prototype_head(model, parameters_of(model), sx, sy)
    with torch.no_grad():
        features = model.embedding(sx)
        centres = torch.stack([features[sy == k].mean(0) for k in range(WAYS)])  # by hand, class by class
        torch.testing.assert_close(weight, 2 * centres)
        torch.testing.assert_close(bias, -(centres ** 2).sum(1))
        # Its softmax is the prototypical network's: the logits differ by ‖f(x)‖², the same for every class.
        query = model.embedding(qx)
        head_logits = query @ weight.T + bias
        distance_logits = -torch.cdist(query, centres) ** 2
        torch.testing.assert_close(F.softmax(head_logits, -1), F.softmax(distance_logits, -1))


def reference_meta_gradient(model, tasks, inner: InnerLoop, rows=None):
    """The textbook loop, written independently: per task, build the head from the prototypes, take the inner
    steps with create_graph, and backpropagate the mean query loss. As in the authors' code, the inner loop's
    variables are the body and the head, each its own: the inner gradient w.r.t. the body holds the head fixed
    (here by differentiating w.r.t. a copy of the body that the head was not computed from). ``rows``: each task's
    support rows for its minibatches, ``[T, steps · inner.batch_size]``; ``None``: every step takes the whole set."""
    leaves = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    num_tasks = tasks.support_x.shape[0]
    for t in range(num_tasks):
        sx, sy, qx, qy = tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], tasks.query_y[t]
        body = {n[len("embedding."):]: p for n, p in leaves.items() if n.startswith("embedding.")}
        features = torch.func.functional_call(model.embedding, body, (sx,))
        centres = torch.stack([features[sy == k].mean(0) for k in range(WAYS)])
        fast = {n: p * 1.0 for n, p in leaves.items() if n.startswith("embedding.")}
        fast.update({"head.weight": 2 * centres, "head.bias": -(centres ** 2).sum(1)})
        for i in range(inner.steps):
            r = slice(None) if rows is None else rows[t][i * inner.batch_size:(i + 1) * inner.batch_size]
            loss = F.cross_entropy(torch.func.functional_call(model, fast, (sx[r],)), sy[r])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - inner.lr * g for (n, p), g in zip(fast.items(), grads)}
        (F.cross_entropy(predict(model, fast, sx, qx, inner.query_bn), qy) / num_tasks).backward()
    return {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in leaves.items()}


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_the_meta_gradient_equals_the_textbook_loop_and_finite_differences(protomaml, strategy):
    method, module = protomaml
    from metabook_learn.training import TrainConfig

    config = TrainConfig(algorithm="protomaml", ways=WAYS, shots=2, queries=3, inner_steps=2, inner_lr=0.3,
                         strategy=strategy, device="cpu")
    model, tasks = tiny_network(module), random_tasks(2)
    params = parameters_of(model)
    step = method.step(config, model, params, None, tasks)
    expected = reference_meta_gradient(model, tasks, InnerLoop(steps=2, lr=0.3))
    for name in params:
        torch.testing.assert_close(step.direction[name], expected[name], rtol=1e-9, atol=1e-12)
    assert step.direction["head.weight"].abs().max() == 0  # the placeholders never act
    assert step.direction["embedding.body.0.conv.weight"].abs().max() > 0  # the prototypes carry θ's gradient

    # Finite differences along the gradient: d/dε L(θ + ε g) at 0 is ‖g‖².
    direction = step.direction
    norm2 = sum((g ** 2).sum() for g in direction.values())

    def loss_at(eps):
        moved = {n: p.detach() + eps * direction[n] for n, p in params.items()}
        return method.step(config, model, moved, None, tasks).loss

    eps = 1e-6
    slope = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    torch.testing.assert_close(slope, norm2, rtol=1e-5, atol=0)


def test_with_minibatches_each_tasks_support_set_is_shuffled_on_its_own_and_the_prototypes_see_all_of_it(protomaml):
    method, module = protomaml
    from metabook_learn.inner_loop import task_minibatches
    from metabook_learn.training import TrainConfig

    config = TrainConfig(algorithm="protomaml", ways=WAYS, shots=2, queries=3, inner_steps=3, inner_lr=0.3,
                         inner_batch_size=4, strategy="vmap", device="cpu")
    model, tasks = tiny_network(module), random_tasks(2)
    torch.manual_seed(5)  # training draws the shuffles from torch's global generator
    step = method.step(config, model, parameters_of(model), None, tasks)
    rows = task_minibatches(2, 2 * WAYS, 4, 3, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(rows[0], rows[1])
    expected = reference_meta_gradient(model, tasks, InnerLoop(steps=3, lr=0.3, batch_size=4), rows)
    for name, grad in step.direction.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-9, atol=1e-12)


def test_it_trains_and_evaluates_through_the_api(protomaml):
    from metabook_learn.evaluation import evaluate
    from metabook_learn.training import TrainConfig, train

    method, module = protomaml

    class Tasks:
        """A stream of the random float64 tasks, shaped like a sampler's."""

        num_ways, num_shots, num_queries = WAYS, 2, 3

        def __init__(self):
            self.seed = 0

        def sample(self, count):
            self.seed += 1
            return _Movable(random_tasks(count, seed=self.seed))

        def state_dict(self):
            return {"seed": self.seed}

        def load_state_dict(self, state):
            self.seed = state["seed"]

    config = TrainConfig(algorithm="protomaml", ways=WAYS, shots=2, queries=3, meta_batch=2, steps=3,
                         inner_steps=1, eval_inner_steps=2, inner_lr=0.3, validate_every=3, validation_tasks=4,
                         device="cpu", log_every=1)
    model = tiny_network(module)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(config, model, Tasks(), Tasks(), progress=False)
    assert len(result.curve) == 3 and result.curve[-1].validation is not None
    assert not torch.equal(before["embedding.body.0.conv.weight"], model.embedding.body[0].conv.weight)
    torch.testing.assert_close(model.head.weight, before["head.weight"])  # a placeholder: never moves
    scores = evaluate(model, Tasks(), result.eval_inner, num_tasks=4, method=method)
    assert scores.num_tasks == 4 and 0 <= scores.mean <= 1 and scores.inner_steps == 2


class _Movable:
    def __init__(self, tasks):
        self.__dict__.update(vars(tasks))

    def to(self, device):
        return self


@pytest.mark.parametrize("outside", [False, True], ids=["package", "a-copy-outside"])
def test_it_trains_and_evaluates_from_the_command_line(capsys, tmp_path, real_mirror, real_cache, outside):
    folders = ["--cache", str(real_cache), "--mirror", str(real_mirror), "--device", "cpu", "--no-progress"]
    name = "cli-protomaml" if outside else "protomaml"
    spec = copy_outside(tmp_path, name) if outside else None
    chosen = ["--method", spec] if outside else ["--algorithm", "protomaml"]
    checkpoint = tmp_path / "protomaml.pt"
    code = main(["train", *chosen, "--data", "omniglot", "--steps", "2", "--meta-batch", "2",
                 "--validate-every", "2", "--validation-tasks", "2", "--checkpoint", str(checkpoint), *folders])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{name} on omniglot" in out and "MAML's values" in out
    recorded = torch.load(checkpoint, weights_only=True)["method"]
    assert recorded["name"] == name and recorded["origin"] == (spec or "metabook_learn.protomaml")
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", *(["--method", spec] if outside else []),
                 *folders])
    out, err = capsys.readouterr()
    assert code == 0, err
    evaluation = json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]
    assert evaluation["num_tasks"] == 4 and evaluation["inner_steps"] == 3  # MAML's 5-way Omniglot value


def test_first_order_keeps_the_path_through_the_prototypes_and_both_strategies_agree(protomaml):
    """fo-Proto-MAML: the inner gradients are constants, the head's dependence on θ is not (the authors' code)."""
    method, module = protomaml
    from metabook_learn.training import TrainConfig

    model, tasks = tiny_network(module), random_tasks(2)
    steps = {strategy: method.step(TrainConfig(algorithm="protomaml", ways=WAYS, shots=2, queries=3, inner_steps=2,
                                                inner_lr=0.3, first_order=True, strategy=strategy, device="cpu"),
                                   model, parameters_of(model), None, tasks)
             for strategy in ("loop", "vmap")}
    second = method.step(TrainConfig(algorithm="protomaml", ways=WAYS, shots=2, queries=3, inner_steps=2,
                                     inner_lr=0.3, strategy="loop", device="cpu"), model, parameters_of(model), None,
                         tasks)
    for name, grad in steps["loop"].direction.items():
        torch.testing.assert_close(steps["vmap"].direction[name], grad, rtol=1e-9, atol=1e-12)
    conv = "embedding.body.0.conv.weight"
    assert steps["loop"].direction[conv].abs().max() > 0
    assert not torch.allclose(steps["loop"].direction[conv], second.direction[conv])  # first order differs


def test_the_commands_and_the_python_on_the_page_run(real_mirror, real_cache, monkeypatch, capsys, tmp_path):
    """book/add-your-own-method.md: its copy-and-rename commands, then its Python block, run as written but for
    fewer steps and test tasks, in a fresh folder."""
    page = (ROOT / "book" / "add-your-own-method.md").read_text()
    assert "cp \"$(python -c 'import metabook_learn.protomaml as m; print(m.__file__)')\" my_protomaml.py" in page
    assert """sed -i 's/name="protomaml"/name="my-protomaml"/' my_protomaml.py""" in page
    copy_outside(tmp_path)  # the same two commands, in Python
    (code,) = [block.split("```")[0] for block in page.split("```python\n")[1:]]
    quick = code.replace("steps=300", "steps=2").replace("meta_batch=8", "meta_batch=2").replace(
        "result.eval_inner,", "result.eval_inner, num_tasks=4,")
    assert quick.count("steps=2") == 1 and "num_tasks=4" in quick
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METABOOK_DATA", str(real_cache))
    monkeypatch.setenv("METABOOK_MIRROR", str(real_mirror))
    exec(compile(quick, "add-your-own-method.md", "exec"), {})
    assert "95% CI over 4 tasks" in capsys.readouterr().out
