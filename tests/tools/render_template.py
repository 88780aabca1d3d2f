#!/usr/bin/env python3
# Render template.yaml as CloudFormation would deploy it: SAM's own translator turns it
# into plain CloudFormation, then every intrinsic function is resolved for the given
# parameter values (argv[2], JSON; pseudo parameters such as AWS::Partition too).
# Resources' names and attributes, which only a deployment knows, get stand-in values.
import json, os, sys
import boto3
from samcli.yamlhelper import yaml_parse
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

path, overrides = sys.argv[1], json.loads(sys.argv[2])
with open(path) as f:
    sam = yaml_parse(f.read())
base = os.path.dirname(os.path.abspath(path))
for rid, r in sam.get("Resources", {}).items():
    props = r.get("Properties", {})
    if r.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
        props["CodeUri"] = "s3://bucket/" + rid  # what `sam package` would upload
    if r.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
        with open(os.path.join(base, props.pop("DefinitionUri"))) as f:
            props["Definition"] = json.load(f)

params = {k: str(v.get("Default", "")) for k, v in sam.get("Parameters", {}).items()}
pseudo = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
          "AWS::StackName": "crane", "AWS::URLSuffix": "amazonaws.com"}
for k, v in overrides.items():
    (pseudo if k.startswith("AWS::") else params)[k] = v
# A partition implies its regions (SAM derives the partition of its own ARNs from the region).
if "AWS::Region" not in overrides:
    pseudo["AWS::Region"] = {"aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}.get(
        pseudo["AWS::Partition"], "us-east-1")
if "AWS::URLSuffix" not in overrides and pseudo["AWS::Partition"] == "aws-cn":
    pseudo["AWS::URLSuffix"] = "amazonaws.com.cn"
# AWS::LanguageExtensions runs before SAM in CloudFormation: it resolves the Fn::If whose
# conditions depend only on parameters (the template uses that in the HTTP API's Auth).
def pre_condition(c):
    if isinstance(c, dict) and len(c) == 1:
        (k, v), = c.items()
        if k == "Condition":
            return pre_condition(sam["Conditions"][v])
        if k == "Fn::Equals":
            a, b = (pre_value(x) for x in v)
            return str(a) == str(b)
        if k == "Fn::Not":
            return not pre_condition(v[0])
        if k == "Fn::And":
            return all(pre_condition(x) for x in v)
        if k == "Fn::Or":
            return any(pre_condition(x) for x in v)
    raise ValueError("cannot pre-resolve condition %r" % (c,))
def pre_value(v):
    if isinstance(v, dict) and list(v) == ["Ref"]:
        return params.get(v["Ref"], pseudo.get(v["Ref"]))
    return v
def pre_if(v):
    if isinstance(v, list):
        return [pre_if(x) for x in v]
    if isinstance(v, dict):
        if list(v) == ["Fn::If"]:
            name, yes, no = v["Fn::If"]
            chosen = yes if pre_condition(sam["Conditions"][name]) else no
            return pre_if(chosen)
        return {k: x for k, x in ((k, pre_if(x)) for k, x in v.items()) if x != {"Ref": "AWS::NoValue"}}
    return v
transforms = sam.get("Transform", [])
if "AWS::LanguageExtensions" in (transforms if isinstance(transforms, list) else [transforms]):
    for r in sam.get("Resources", {}).values():
        if r.get("Type") == "AWS::Serverless::HttpApi" and "Auth" in r.get("Properties", {}):
            r["Properties"]["Auth"] = pre_if(r["Properties"]["Auth"])
session = boto3.session.Session(region_name=pseudo["AWS::Region"])
cfn = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session).translate(
    sam_template=sam, parameter_values=dict(params))

NO_VALUE = object()
def attr(rid, name):
    arn = "arn:%s:stand-in:%s:%s:%s" % (pseudo["AWS::Partition"], pseudo["AWS::Region"], pseudo["AWS::AccountId"], rid)
    return {"Arn": arn, "StreamArn": arn + "/stream/1", "QueueName": rid, "QueueUrl": "https://queue/" + rid}.get(name, rid + "." + name)
def ref(name):
    if name == "AWS::NoValue":
        return NO_VALUE
    if name in pseudo:
        return pseudo[name]
    if name in params:
        return params[name]
    if name in cfn.get("Resources", {}):
        return name
    raise KeyError("Ref to unknown " + name)
conditions = {}
def condition(name):
    if name not in conditions:
        conditions[name] = resolve(cfn["Conditions"][name])
    return conditions[name]
def sub(text, extra):
    out, i = "", 0
    while True:
        j = text.find("${", i)
        if j < 0:
            return out + text[i:]
        k = text.index("}", j)
        name = text[j + 2:k]
        out += text[i:j]
        if name.startswith("!"):
            out += "${" + name[1:] + "}"
        elif name in extra:
            out += str(extra[name])
        elif "." in name and not name.startswith("AWS::"):
            rid, a = name.split(".", 1)
            out += attr(rid, a)
        else:
            out += str(ref(name))
        i = k + 1
def resolve(v):
    if isinstance(v, list):
        return [x for x in (resolve(x) for x in v) if x is not NO_VALUE]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        (k, a), = v.items()
        if k == "Ref": return ref(a)
        if k == "Condition": return condition(a)
        if k == "Fn::If": return resolve(a[1] if condition(a[0]) else a[2])
        if k == "Fn::Equals": return str(resolve(a[0])) == str(resolve(a[1]))
        if k == "Fn::Not": return not resolve(a[0])
        if k == "Fn::And": return all(resolve(x) for x in a)
        if k == "Fn::Or": return any(resolve(x) for x in a)
        if k == "Fn::GetAtt": return attr(*(a.split(".", 1) if isinstance(a, str) else a))
        if k == "Fn::Join": return resolve(a[0]).join(str(x) for x in resolve(a[1]))
        if k == "Fn::Split": return resolve(a[1]).split(resolve(a[0]))
        if k == "Fn::Select": return resolve(a[1])[int(resolve(a[0]))]
        if k == "Fn::FindInMap":
            m, top, second = (resolve(x) for x in a)
            return cfn["Mappings"][m][top][second]
        if k == "Fn::Sub":
            if isinstance(a, str): return sub(a, {})
            return sub(a[0], {n: resolve(x) for n, x in a[1].items()})
    out = {}
    for k, x in v.items():
        r = resolve(x)
        if r is not NO_VALUE:
            out[k] = r
    return out

rendered = {"Resources": {}, "Outputs": {}}
for rid, r in cfn["Resources"].items():
    if "Condition" in r and not condition(r["Condition"]):
        continue
    rendered["Resources"][rid] = resolve(r)
# What CloudFormation does with a state machine's DefinitionSubstitutions at deploy time.
for r in rendered["Resources"].values():
    props = r.get("Properties", {})
    if r.get("Type") == "AWS::StepFunctions::StateMachine" and "DefinitionSubstitutions" in props:
        definition = props.get("DefinitionString", "")
        for k, v in props.pop("DefinitionSubstitutions").items():
            definition = definition.replace("${" + k + "}", str(v))
        props["DefinitionString"] = definition
for oid, o in cfn.get("Outputs", {}).items():
    if "Condition" in o and not condition(o["Condition"]):
        continue
    rendered["Outputs"][oid] = resolve(o)
json.dump(rendered, sys.stdout)
