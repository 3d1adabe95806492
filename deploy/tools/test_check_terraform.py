#!/usr/bin/env python3
"""Proves that check_terraform.py catches what it claims to: each case breaks a temporary copy
of deploy/terraform in one way and expects a problem line matching a pattern.

    test_check_terraform.py [DEPLOY_DIR]

Prints one line per case and "N passed, N failed"; exits 1 if any case failed.
"""

import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, HERE)
import check_terraform  # noqa: E402  (after the path is set)

REGION = "terraform/modules/region"
CONTROL = "terraform/modules/control-plane"
EXAMPLE = "terraform/examples/three-regions"

# (name, file relative to the deploy dir, old text or None to append, new text, expected pattern)
CASES = [
    (
        "undeclared variable",
        f"{REGION}/main.tf",
        "var.instance_type",
        "var.instance_size",
        r"var\.instance_size is not declared",
    ),
    (
        "unused variable",
        f"{REGION}/variables.tf",
        None,
        'variable "spare" {\n  type        = string\n  description = "x"\n  default     = ""\n}\n',
        r"variable spare is declared but never used",
    ),
    (
        "undeclared local",
        f"{REGION}/outputs.tf",
        "local.node_ids",
        "local.node_names",
        r"local\.node_names is not declared",
    ),
    (
        "undeclared data source",
        f"{REGION}/main.tf",
        "data.aws_ami.debian[0].id",
        "data.aws_ami.ubuntu[0].id",
        r"data\.aws_ami\.ubuntu is not declared",
    ),
    (
        "unknown module argument",
        f"{EXAMPLE}/main.tf",
        "  region                  = \"us\"\n",
        "  region                  = \"us\"\n  instance_size = \"x\"\n",
        r"module region_us passes instance_size, which \.\./\.\./modules/region does not declare",
    ),
    (
        "required variable not passed",
        f"{EXAMPLE}/main.tf",
        "  binary_sha256           = var.node_binary_sha256\n  key_name                = lookup(var.key_names, \"ap\", null)",
        "  key_name                = lookup(var.key_names, \"ap\", null)",
        r"module region_ap does not pass required variable binary_sha256",
    ),
    (
        "unknown module output",
        f"{EXAMPLE}/outputs.tf",
        "module.control_plane.grpc_endpoint",
        "module.control_plane.endpoint",
        r"module\.control_plane\.endpoint: \.\./\.\./modules/control-plane has no output endpoint",
    ),
    (
        "unknown module",
        f"{EXAMPLE}/outputs.tf",
        "module.region_eu.node_urls",
        "module.region_xx.node_urls",
        r"module\.region_xx is not declared",
    ),
    (
        "provider alias not configured",
        f"{EXAMPLE}/main.tf",
        "providers = { aws = aws.ap }",
        "providers = { aws = aws.sa }",
        r"passed provider aws\.sa, which .* does not configure",
    ),
    (
        "variable without description",
        f"{REGION}/variables.tf",
        '  description = "Number of nodes in the region."\n',
        "",
        r"variable node_count has no description",
    ),
    (
        "output without description",
        f"{REGION}/outputs.tf",
        '  description = "Node ids, in order (REGION-1 … REGION-N)."\n',
        "",
        r"output node_ids has no description",
    ),
    (
        "optional() attribute",
        f"{EXAMPLE}/variables.tf",
        "    vpc_id     = string\n",
        "    vpc_id     = optional(string)\n",
        r"optional\(\) object attributes need Terraform 1\.3",
    ),
    (
        "nullable",
        f"{REGION}/variables.tf",
        '  default     = 2\n',
        '  default     = 2\n  nullable    = false\n',
        r"nullable needs Terraform 1\.1",
    ),
    (
        "terraform_data",
        f"{REGION}/main.tf",
        None,
        'resource "terraform_data" "x" {\n  input = var.region\n}\n',
        r"terraform_data needs Terraform 1\.4",
    ),
    (
        "precondition",
        f"{REGION}/main.tf",
        "    ignore_changes = [ami, user_data]\n",
        "    ignore_changes = [ami, user_data]\n    precondition {\n      condition     = true\n      error_message = \"x\"\n    }\n",
        r"preconditions and postconditions need Terraform 1\.2",
    ),
    (
        "newer function",
        f"{REGION}/main.tf",
        'var.public_url_template == ""',
        'startswith(var.public_url_template, "")',
        r"this function needs Terraform 1\.3",
    ),
    (
        "validation refers to another variable",
        f"{REGION}/variables.tf",
        "condition     = var.drain_timeout_seconds >= 1",
        "condition     = var.drain_timeout_seconds >= var.node_count",
        r"validation of variable drain_timeout_seconds refers to var\.node_count",
    ),
    (
        "required_version excludes 1.0",
        f"{REGION}/versions.tf",
        'required_version = ">= 1.0.0"',
        'required_version = ">= 1.3"',
        r"does not admit Terraform 1\.0\.3",
    ),
    (
        "template uses a variable not passed",
        f"{REGION}/cloud-init/cloud-init.yaml.tftpl",
        "# strata-node ${node_id}:",
        "# strata-node ${node_name}:",
        r"uses node_name, which .* does not pass",
    ),
    (
        "variable passed to a template that does not use it",
        f"{REGION}/cloud-init/main.tf",
        "    node_id       = var.node_id\n",
        "    node_id       = var.node_id\n    spare         = var.region\n",
        r"passes spare to .*cloud-init\.yaml\.tftpl, which does not use it",
    ),
    (
        "missing file",
        f"{REGION}/cloud-init/main.tf",
        "systemd/strata-node.service",
        "systemd/strata-nodes.service",
        r"filebase64\(\) reads .*strata-nodes\.service, which does not exist",
    ),
    (
        "private key not sensitive",
        f"{CONTROL}/variables.tf",
        "  sensitive   = true\n\n  validation {\n    condition     = can(regex(\"-----BEGIN [A-Z ]*PRIVATE KEY",
        "\n  validation {\n    condition     = can(regex(\"-----BEGIN [A-Z ]*PRIVATE KEY",
        r"variable tls_key_pem holds a secret but is not sensitive",
    ),
    (
        "operator tokens not sensitive",
        f"{CONTROL}/cloud-init/variables.tf",
        "Written root:strata 0640.\"\n  sensitive   = true\n",
        "Written root:strata 0640.\"\n",
        r"variable operator_tokens holds a secret but is not sensitive",
    ),
    (
        "node certificates (with keys) not sensitive",
        f"{REGION}/variables.tf",
        "keep the state private.\"\n  sensitive   = true\n",
        "keep the state private.\"\n",
        r"variable node_certificates holds a secret but is not sensitive",
    ),
    (
        "tfvars example: unknown variable",
        f"{EXAMPLE}/terraform.tfvars.example",
        None,
        'control_plane_name = "cp.example.net"\n',
        r"terraform\.tfvars\.example: control_plane_name is not a variable of",
    ),
    (
        "tfvars example: commented-out unknown variable",
        f"{EXAMPLE}/terraform.tfvars.example",
        "# operator_tokens_file =",
        "# operator_token_file =",
        r"terraform\.tfvars\.example: operator_token_file is not a variable of",
    ),
    (
        "tfvars example: required variable not set",
        f"{EXAMPLE}/terraform.tfvars.example",
        'control_plane_dns_name = "cp.example.net"\n',
        "",
        r"terraform\.tfvars\.example: does not set control_plane_dns_name, which has no default",
    ),
    (
        "syntax error",
        f"{REGION}/outputs.tf",
        None,
        'output "broken" {\n  value = [\n}\n',
        r"outputs\.tf: does not parse",
    ),
]


def run_case(copy, case):
    """Applies one case to the copy, checks, and restores the file."""
    _, rel, old, new, pattern = case
    path = os.path.join(copy, rel)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    if old is None:
        text = original + "\n" + new
    elif old not in original:
        return f"the case no longer applies: {old!r} is not in {rel}"
    else:
        text = original.replace(old, new, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        problems, _, _ = check_terraform.run([os.path.join(copy, "terraform")])
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    if not problems:
        return "the checker found nothing"
    if not any(re.search(pattern, p) for p in problems):
        return f"no problem matching {pattern!r} in:\n  " + "\n  ".join(problems)
    return None


def main(argv):
    deploy = argv[0] if argv else os.path.dirname(HERE)
    passed = failed = 0
    # The unchanged tree must be clean, or every case would pass for the wrong reason.
    problems, _, _ = check_terraform.run([os.path.join(deploy, "terraform")])
    if problems:
        print("test_check_terraform: the unchanged tree already has problems:")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    with tempfile.TemporaryDirectory(prefix="strata-check-tf-") as tmp:
        copy = os.path.join(tmp, "deploy")
        shutil.copytree(deploy, copy, ignore=shutil.ignore_patterns(".terraform"))
        for case in CASES:
            err = run_case(copy, case)
            if err is None:
                passed += 1
                print(f"  ok    {case[0]}")
            else:
                failed += 1
                print(f"  FAIL  {case[0]}: {err}")
    print(f"test_check_terraform: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
