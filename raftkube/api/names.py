"""Syntax checks of names, label keys and values, ports and keys, in Kubernetes' words.

Each function takes a string and returns the list of what is wrong with it, empty when it
is valid, with the exact messages of Kubernetes' `apimachinery/pkg/util/validation`. They
return messages rather than raising because validation reports every problem of an object
at once and attaches its own field path and value to each message; users who know
Kubernetes recognise these sentences, regex and all.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
PORT_NAME_MAX = 15

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = f"({_QUALIFIED_NAME_FMT})?"
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_ENV_VAR_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_PERCENT_FMT = "[0-9]+%"

_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must "
                       "start and end with an alphanumeric character")


def _full(fmt: str) -> re.Pattern[str]:
    # Used with fullmatch: `$` would also accept a trailing newline.
    return re.compile(fmt)


_DNS1123_LABEL = _full(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = _full(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = _full(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME = _full(_QUALIFIED_NAME_FMT)
_LABEL_VALUE = _full(_LABEL_VALUE_FMT)
_CONFIG_KEY = _full(_CONFIG_KEY_FMT)
_ENV_VAR = _full(_ENV_VAR_FMT)
_PERCENT = _full(_PERCENT_FMT)
_PORT_NAME_CHARS = re.compile("[-a-z0-9]+")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' `RegexError`, down to its double space before a second example."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _format_errors(value: str, max_len: int, rx: re.Pattern[str], msg: str, fmt: str,
                   *examples: str) -> list[str]:
    errs = [max_len_error(max_len)] if len(value) > max_len else []
    if not rx.fullmatch(value):
        errs.append(regex_error(msg, fmt, *examples))
    return errs


def dns1123_label_errors(value: str) -> list[str]:
    """A lowercase RFC 1123 label: namespace names, container and port names."""
    return _format_errors(
        value, DNS1123_LABEL_MAX, _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
        "or '-', and must start and end with an alphanumeric character",
        _DNS1123_LABEL_FMT, "my-name", "123-abc")


def dns1123_subdomain_errors(value: str) -> list[str]:
    """A lowercase RFC 1123 subdomain: the names of most objects."""
    return _format_errors(
        value, DNS1123_SUBDOMAIN_MAX, _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric character",
        _DNS1123_SUBDOMAIN_FMT, "example.com")


def dns1035_label_errors(value: str) -> list[str]:
    """An RFC 1035 label (starts with a letter): Service names, which become DNS names."""
    return _format_errors(
        value, DNS1123_LABEL_MAX, _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
        "start with an alphabetic character, and end with an alphanumeric character",
        _DNS1035_LABEL_FMT, "my-name", "abc-123")


def qualified_name_errors(value: str) -> list[str]:
    """`[prefix/]name`, prefix a DNS subdomain: label keys, annotation keys, finalizers."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in dns1123_subdomain_errors(prefix))
    else:
        return ["a qualified name " + regex_error(
            _QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append("name part " + regex_error(
            _QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def label_key_errors(value: str) -> list[str]:
    """A label key is a qualified name."""
    return qualified_name_errors(value)


def label_value_errors(value: str) -> list[str]:
    """A label value: empty, or up to 63 of `[A-Za-z0-9_.-]` starting and ending alphanumeric."""
    return _format_errors(
        value, LABEL_VALUE_MAX, _LABEL_VALUE,
        "a valid label must be an empty string or consist of alphanumeric characters, "
        "'-', '_' or '.', and must start and end with an alphanumeric character",
        _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")


def port_name_errors(value: str) -> list[str]:
    """An IANA_SVC_NAME (RFC 6335): named ports and string `targetPort`s."""
    errs = []
    if len(value) > PORT_NAME_MAX:
        errs.append(max_len_error(PORT_NAME_MAX))
    if not _PORT_NAME_CHARS.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_number_errors(value: int) -> list[str]:
    return [] if 1 <= value <= 65535 else ["must be between 1 and 65535, inclusive"]


def config_key_errors(value: str) -> list[str]:
    """A ConfigMap or Secret key, which becomes a file name when mounted."""
    errs = _format_errors(
        value, DNS1123_SUBDOMAIN_MAX, _CONFIG_KEY,
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")
    return errs or _chdir_errors(value)


def env_var_name_errors(value: str) -> list[str]:
    errs = []
    if not _ENV_VAR.fullmatch(value):
        errs.append(regex_error(
            "a valid environment variable name must consist of alphabetic characters, "
            "digits, '_', '-', or '.', and must not start with a digit",
            _ENV_VAR_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    errs.extend(_chdir_errors(value))
    return errs


def percent_errors(value: str) -> list[str]:
    if _PERCENT.fullmatch(value):
        return []
    return [regex_error("a valid percent string must be a numeric string followed by an "
                        "ending '%'", _PERCENT_FMT, "1%", "93%")]


def _chdir_errors(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []
