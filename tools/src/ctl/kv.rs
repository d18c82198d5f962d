//! `get`, `put` and `del`: etcdctl 3.4's flags, argument checks (made before connecting, with
//! etcdctl's messages and exit codes) and requests.

use std::io::Read;

use retcd_net::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, range_request,
};

use super::flags::{Kind, Parsed, Spec, hidden, spec};
use super::print::{Printed, Printer};
use super::rawarg::bytes;
use super::usage::About;
use super::{Cmd, connected};
use crate::output::{Failure, exit};
use retcd_net::keys::prefix_range;

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: GET_ABOUT,
        flags: GET,
        run: get,
    },
    Cmd {
        about: PUT_ABOUT,
        flags: PUT,
        run: |p, pr| put(p, pr),
    },
    Cmd {
        about: DEL_ABOUT,
        flags: DEL,
        run: |p, pr| del(p, pr),
    },
    Cmd {
        about: COMPACTION_ABOUT,
        flags: COMPACTION,
        run: compaction,
    },
];

pub const GET_ABOUT: About = About {
    path: "get",
    args: "[options] <key> [range_end]",
    short: "Gets the key or a range of keys",
    long: None,
};

pub const PUT_ABOUT: About = About {
    path: "put",
    args: "[options] <key> <value> (<value> can also be given from stdin)",
    short: "Puts the given key into the store",
    long: Some(
        "
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
",
    ),
};

pub const DEL_ABOUT: About = About {
    path: "del",
    args: "[options] <key> [range_end]",
    short: "Removes the specified key or range of keys [key, range_end)",
    long: None,
};

pub const COMPACTION_ABOUT: About = About {
    path: "compaction",
    args: "[options] <revision>",
    short: "Compacts the event history in etcd",
    long: None,
};

pub const COMPACTION: &[Spec] = &[spec(
    "physical",
    Kind::Bool,
    "false",
    "'true' to wait for compaction to physically remove all old revisions",
)];

pub const GET: &[Spec] = &[
    spec(
        "consistency",
        Kind::Str,
        "l",
        "Linearizable(l) or Serializable(s)",
    ),
    spec(
        "order",
        Kind::Str,
        "",
        "Order of results; ASCEND or DESCEND (ASCEND by default)",
    ),
    spec(
        "sort-by",
        Kind::Str,
        "",
        "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION",
    ),
    spec("limit", Kind::Int, "0", "Maximum number of results"),
    spec(
        "prefix",
        Kind::Bool,
        "false",
        "Get keys with matching prefix",
    ),
    spec(
        "from-key",
        Kind::Bool,
        "false",
        "Get keys that are greater than or equal to the given key using byte compare",
    ),
    spec("rev", Kind::Int, "0", "Specify the kv revision"),
    spec("keys-only", Kind::Bool, "false", "Get only the keys"),
    spec(
        "print-value-only",
        Kind::Bool,
        "false",
        "Only write values when using the \"simple\" output format",
    ),
    hidden(spec(
        "count-only",
        Kind::Bool,
        "false",
        "Get only the count",
    )),
];

pub const PUT: &[Spec] = &[
    spec(
        "lease",
        Kind::Str,
        "0",
        "lease ID (in hexadecimal) to attach to the key",
    ),
    spec(
        "prev-kv",
        Kind::Bool,
        "false",
        "return the previous key-value pair before modification",
    ),
    spec(
        "ignore-value",
        Kind::Bool,
        "false",
        "updates the key using its current value",
    ),
    spec(
        "ignore-lease",
        Kind::Bool,
        "false",
        "updates the key using its current lease",
    ),
];

pub const DEL: &[Spec] = &[
    spec(
        "prefix",
        Kind::Bool,
        "false",
        "delete keys with matching prefix",
    ),
    spec(
        "prev-kv",
        Kind::Bool,
        "false",
        "return deleted key-value pairs",
    ),
    spec(
        "from-key",
        Kind::Bool,
        "false",
        "delete keys that are greater than or equal to the given key using byte compare",
    ),
];

pub fn bad(code: i32, message: &str) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

/// `get`'s and `del`'s first checks: a key is given, and not both `--prefix` and `--from-key`.
fn range_flags(p: &Parsed, command: &str) -> Result<(bool, bool), Failure> {
    if p.args.is_empty() {
        return Err(bad(
            exit::BAD_ARGS,
            &format!(
                "{command} command needs one argument as key and an optional argument as range_end"
            ),
        ));
    }
    let (prefix, from_key) = (p.bool("prefix"), p.bool("from-key"));
    if prefix && from_key {
        return Err(bad(
            exit::BAD_ARGS,
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    Ok((prefix, from_key))
}

/// The key and range end of `get` and `del` (clientv3's WithRange, WithPrefix, WithFromKey):
/// an empty key with `--prefix` or `--from-key` is every key (`\0` to `\0`).
fn key_range(p: &Parsed, prefix: bool, from_key: bool) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let mut key = bytes(&p.args[0]);
    let mut end = Vec::new();
    if let Some(e) = p.args.get(1) {
        if prefix || from_key {
            return Err(bad(
                exit::BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        end = bytes(e);
    }
    if prefix {
        return Ok(prefix_range(&key));
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        end = vec![0];
    }
    Ok((key, end))
}

pub fn get(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let req = get_request(p)?;
    let resp = connected(p, |c| async move {
        let mut kv = c.kv();
        c.call(kv.range(c.request(req))).await
    })?;
    // etcdctl 3.5's --count-only, checked after the call as 3.5 does.
    if p.bool("count-only") && printer.format != crate::output::Format::Fields {
        return Err(bad(
            exit::BAD_ARGS,
            "--count-only is only for `--write-out=fields`",
        ));
    }
    if p.bool("print-value-only") {
        if printer.format != crate::output::Format::Simple {
            return Err(bad(
                exit::BAD_ARGS,
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.value_only = true;
    }
    Ok(printer.get(&resp))
}

/// etcdctl's getGetOp: `get`'s request from its flags and arguments (also a txn's `get` line).
pub fn get_request(p: &Parsed) -> Result<RangeRequest, Failure> {
    let (prefix, from_key) = range_flags(p, "get")?;
    let serializable = match p.str("consistency") {
        "s" => true,
        "l" => false,
        other => {
            return Err(bad(
                exit::BAD_FEATURE,
                &format!("unknown consistency flag \"{other}\""),
            ));
        }
    };
    if p.bool("keys-only") && p.bool("count-only") {
        return Err(bad(
            exit::BAD_ARGS,
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let mut req = RangeRequest {
        limit: p.int("limit"),
        serializable,
        keys_only: p.bool("keys-only"),
        count_only: p.bool("count-only"),
        ..Default::default()
    };
    (req.key, req.range_end) = key_range(p, prefix, from_key)?;
    if p.int("rev") > 0 {
        req.revision = p.int("rev");
    }
    let order = match p.str("order").to_uppercase().as_str() {
        "ASCEND" => range_request::SortOrder::Ascend,
        "DESCEND" => range_request::SortOrder::Descend,
        "" => range_request::SortOrder::None,
        _ => {
            return Err(bad(
                exit::BAD_FEATURE,
                &format!("bad sort order {}", p.str("order")),
            ));
        }
    };
    let target = match p.str("sort-by").to_uppercase().as_str() {
        "CREATE" => range_request::SortTarget::Create,
        "KEY" | "" => range_request::SortTarget::Key,
        "MODIFY" => range_request::SortTarget::Mod,
        "VALUE" => range_request::SortTarget::Value,
        "VERSION" => range_request::SortTarget::Version,
        _ => {
            return Err(bad(
                exit::BAD_FEATURE,
                &format!("bad sort target {}", p.str("sort-by")),
            ));
        }
    };
    // clientv3's WithSort: ascending by key is the store's own order, asked as no sort.
    let order =
        if target == range_request::SortTarget::Key && order == range_request::SortOrder::Ascend {
            range_request::SortOrder::None
        } else {
            order
        };
    req.sort_order = order as i32;
    req.sort_target = target as i32;
    Ok(req)
}

pub fn put(p: &Parsed, printer: &Printer) -> Result<Printed, Failure> {
    let req = put_request(p, &mut std::io::stdin())?;
    let resp = connected(p, |c| async move {
        let mut kv = c.kv();
        c.call(kv.put(c.request(req))).await
    })?;
    Ok(printer.put(&resp))
}

/// etcdctl's getPutOp: `put`'s request; a missing value is read from `stdin` (argOrStdin:
/// nothing there is an error).
pub fn put_request(p: &Parsed, stdin: &mut dyn Read) -> Result<PutRequest, Failure> {
    const NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = p.args.first() else {
        return Err(bad(exit::BAD_ARGS, NEEDS));
    };
    let ignore_value = p.bool("ignore-value");
    if ignore_value && p.args.len() > 1 {
        return Err(bad(
            exit::BAD_ARGS,
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let value = if ignore_value {
        Vec::new()
    } else if let Some(v) = p.args.get(1) {
        bytes(v)
    } else {
        let mut v = Vec::new();
        match stdin.read_to_end(&mut v) {
            Ok(_) if !v.is_empty() => v,
            _ => return Err(bad(exit::BAD_ARGS, NEEDS)),
        }
    };
    let lease = super::flags::go_parse_int(p.str("lease"), 16).map_err(|e| {
        bad(
            exit::BAD_ARGS,
            &format!("bad lease ID ({e}), expecting ID in Hex"),
        )
    })?;
    Ok(PutRequest {
        key: bytes(key),
        value,
        lease,
        prev_kv: p.bool("prev-kv"),
        ignore_value,
        ignore_lease: p.bool("ignore-lease"),
    })
}

/// etcdctl's getDelOp: `del`'s request.
pub fn del_request(p: &Parsed) -> Result<DeleteRangeRequest, Failure> {
    let (prefix, from_key) = range_flags(p, "del")?;
    let mut req = DeleteRangeRequest {
        prev_kv: p.bool("prev-kv"),
        ..Default::default()
    };
    (req.key, req.range_end) = key_range(p, prefix, from_key)?;
    Ok(req)
}

pub fn del(p: &Parsed, printer: &Printer) -> Result<Printed, Failure> {
    let req = del_request(p)?;
    let resp = connected(p, |c| async move {
        let mut kv = c.kv();
        c.call(kv.delete_range(c.request(req))).await
    })?;
    Ok(printer.del(&resp))
}

/// `compaction <revision>`: the same line in every output format.
pub fn compaction(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    if p.args.len() != 1 {
        return Err(bad(exit::BAD_ARGS, "compaction command needs 1 argument"));
    }
    let arg = &p.args[0];
    let revision = super::flags::go_parse_int(arg, 10).map_err(Failure::error)?;
    let req = CompactionRequest {
        revision,
        physical: p.bool("physical"),
    };
    connected(p, |c| async move {
        let mut kv = c.kv();
        c.call(kv.compact(c.request(req))).await
    })?;
    Ok(Printed::Out(
        format!("compacted revision {revision}\n").into_bytes(),
    ))
}
