//! The Auth service's commands: `auth enable|disable`, `user add|delete|get|list|passwd|
//! grant-role|revoke-role` and `role add|delete|get|list|grant-permission|revoke-permission`,
//! with etcdctl's password sources (flag, `name:password`, a word on stdin, a prompt without
//! echo) and permission ranges. User and role commands run without a timeout, as etcdctl's.

use std::fmt::Write as _;

use retcd_net::keys::prefix_end;
use retcd_net::pb::authpb::{Permission, UserAddOptions, permission};
use retcd_net::pb::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, ResponseHeader,
    auth_client::AuthClient,
};

use super::client::ask_password;
use super::flags::{Kind, Parsed, Spec, spec};
use super::print::{self, Json, Printed, Printer, fields_header, go_quote};
use super::rawarg::bytes;
use super::usage::about;
use super::{Cmd, connected, connected_no_timeout};
use crate::output::{Failure, Format};

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about("auth enable", "", "Enables authentication"),
        flags: &[],
        run: enable,
    },
    Cmd {
        about: about("auth disable", "", "Disables authentication"),
        flags: &[],
        run: disable,
    },
    // etcdctl 3.5's; hidden from 3.4's listings (super::HIDDEN).
    Cmd {
        about: about("auth status", "", "Returns authentication status"),
        flags: &[],
        run: status,
    },
    Cmd {
        about: about(
            "user add",
            "<user name or user:password> [options]",
            "Adds a new user",
        ),
        flags: &[
            spec(
                "interactive",
                Kind::Bool,
                "true",
                "Read password from stdin instead of interactive terminal",
            ),
            spec(
                "new-user-password",
                Kind::Str,
                "",
                "Supply password from the command line flag",
            ),
            spec(
                "no-password",
                Kind::Bool,
                "false",
                "Create a user without password (CN based auth only)",
            ),
        ],
        run: user_add,
    },
    Cmd {
        about: about("user delete", "<user name>", "Deletes a user"),
        flags: &[],
        run: user_delete,
    },
    Cmd {
        about: about(
            "user get",
            "<user name> [options]",
            "Gets detailed information of a user",
        ),
        flags: &[spec(
            "detail",
            Kind::Bool,
            "false",
            "Show permissions of roles granted to the user",
        )],
        run: user_get,
    },
    Cmd {
        about: about("user list", "", "Lists all users"),
        flags: &[],
        run: user_list,
    },
    Cmd {
        about: about(
            "user passwd",
            "<user name> [options]",
            "Changes password of user",
        ),
        flags: &[spec(
            "interactive",
            Kind::Bool,
            "true",
            "If true, read password from stdin instead of interactive terminal",
        )],
        run: user_passwd,
    },
    Cmd {
        about: about(
            "user grant-role",
            "<user name> <role name>",
            "Grants a role to a user",
        ),
        flags: &[],
        run: user_grant_role,
    },
    Cmd {
        about: about(
            "user revoke-role",
            "<user name> <role name>",
            "Revokes a role from a user",
        ),
        flags: &[],
        run: user_revoke_role,
    },
    Cmd {
        about: about("role add", "<role name>", "Adds a new role"),
        flags: &[],
        run: role_add,
    },
    Cmd {
        about: about("role delete", "<role name>", "Deletes a role"),
        flags: &[],
        run: role_delete,
    },
    Cmd {
        about: about(
            "role get",
            "<role name>",
            "Gets detailed information of a role",
        ),
        flags: &[],
        run: role_get,
    },
    Cmd {
        about: about("role list", "", "Lists all roles"),
        flags: &[],
        run: role_list,
    },
    Cmd {
        about: about(
            "role grant-permission",
            "[options] <role name> <permission type> <key> [endkey]",
            "Grants a key to a role",
        ),
        flags: GRANT,
        run: role_grant,
    },
    Cmd {
        about: about(
            "role revoke-permission",
            "<role name> <key> [endkey]",
            "Revokes a key from a role",
        ),
        flags: REVOKE,
        run: role_revoke,
    },
];

const GRANT: &[Spec] = &[
    spec("prefix", Kind::Bool, "false", "grant a prefix permission"),
    spec(
        "from-key",
        Kind::Bool,
        "false",
        "grant a permission of keys that are greater than or equal to the given key using byte compare",
    ),
];

const REVOKE: &[Spec] = &[
    spec("prefix", Kind::Bool, "false", "revoke a prefix permission"),
    spec(
        "from-key",
        Kind::Bool,
        "false",
        "revoke a permission of keys that are greater than or equal to the given key using byte compare",
    ),
];

type Auth = AuthClient<tonic::transport::Channel>;

/// One Auth call without a timeout; its error is `Error: <message>`, exit 1.
fn call<T, F, Fut>(p: &Parsed, f: F) -> Result<T, Failure>
where
    F: FnOnce(std::rc::Rc<super::client::Client>, Auth) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    connected_no_timeout(p, |c| {
        let a = c.auth();
        f(c, a)
    })
}

fn no_args(p: &Parsed, message: &str) -> Result<(), Failure> {
    if p.args.is_empty() {
        Ok(())
    } else {
        Err(Failure::bad_args(message))
    }
}

fn one_arg<'a>(p: &'a Parsed, message: &str) -> Result<&'a str, Failure> {
    match p.args.as_slice() {
        [a] => Ok(a),
        _ => Err(Failure::bad_args(message)),
    }
}

fn two_args<'a>(p: &'a Parsed, message: &str) -> Result<(&'a str, &'a str), Failure> {
    match p.args.as_slice() {
        [a, b] => Ok((a, b)),
        _ => Err(Failure::bad_args(message)),
    }
}

/// The output of a mutation: a fixed line in simple, the header in fields and json.
fn done(
    printer: &Printer,
    h: Option<&ResponseHeader>,
    m: &impl prost::Message,
    line: String,
) -> Printed {
    printer.rpc(
        m,
        |o| o.push_str(&line),
        Some(&|o| fields_header(o, h)),
        |j| j.header(h),
    )
}

fn enable(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "auth enable command does not accept any arguments")?;
    connected(p, |c| async move {
        let mut a = c.auth();
        // etcdctl adds the root role (granted to root) when that is all that is missing.
        loop {
            match c.call(a.auth_enable(c.request(AuthEnableRequest {}))).await {
                Ok(_) => return Ok(()),
                Err(e) if e == "etcdserver: root user does not have root role" => {
                    c.call(a.role_add(c.request(AuthRoleAddRequest {
                        name: "root".into(),
                    })))
                    .await?;
                    c.call(a.user_grant_role(c.request(AuthUserGrantRoleRequest {
                        user: "root".into(),
                        role: "root".into(),
                    })))
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
    })?;
    Ok(Printed::Out(b"Authentication Enabled\n".to_vec()))
}

/// etcdctl 3.5's `auth status`: simple and json as 3.5 prints them, fields refused.
fn status(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "auth status command does not accept any arguments")?;
    let r = connected(p, |c| async move {
        let mut a = c.auth();
        c.call(a.auth_status(c.request(AuthStatusRequest {}))).await
    })?;
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "Authentication Status: {}", r.enabled);
            let _ = writeln!(o, "AuthRevision: {}", r.auth_revision);
        },
        None,
        |j| {
            j.header(r.header.as_ref());
            j.boolean("enabled", r.enabled);
            j.num("authRevision", r.auth_revision);
        },
    ))
}

fn disable(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "auth disable command does not accept any arguments")?;
    connected(p, |c| async move {
        let mut a = c.auth();
        c.call(a.auth_disable(c.request(AuthDisableRequest {})))
            .await
    })?;
    Ok(Printed::Out(b"Authentication Disabled\n".to_vec()))
}

/// `fmt.Scanf("%s")` on stdin: one word, empty when there is none.
fn word_from_stdin() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.split_whitespace().next().unwrap_or("").to_string()
}

/// etcdctl's readPasswordInteractive: asked twice, without echo.
fn read_password_twice(name: &str) -> Result<String, Failure> {
    let first = ask_password(&format!("Password of {name}: "))
        .map_err(|e| Failure::bad_args(format!("failed to ask password: {e}")))?;
    if first.is_empty() {
        return Err(Failure::bad_args("empty password"));
    }
    let second = ask_password(&format!("Type password of {name} again for confirmation: "))
        .map_err(|e| Failure::bad_args(format!("failed to ask password: {e}")))?;
    if first != second {
        return Err(Failure::bad_args("given passwords are different"));
    }
    Ok(first)
}

fn user_add(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let arg = one_arg(p, "user add command requires user name as its argument")?;
    let no_password = p.bool("no-password");
    let (name, password) = if no_password {
        (arg.to_string(), String::new())
    } else if !p.str("new-user-password").is_empty() {
        (arg.to_string(), p.str("new-user-password").to_string())
    } else if let Some((user, pw)) = arg.split_once(':') {
        if user.is_empty() {
            return Err(Failure::bad_args("empty user name is not allowed"));
        }
        (user.to_string(), pw.to_string())
    } else if !p.bool("interactive") {
        (arg.to_string(), word_from_stdin())
    } else {
        (arg.to_string(), read_password_twice(arg)?)
    };
    let req = AuthUserAddRequest {
        name: name.clone(),
        password,
        options: Some(UserAddOptions { no_password }),
        hashed_password: String::new(),
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.user_add(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        format!("User {name} created\n"),
    ))
}

fn user_delete(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "user delete command requires user name as its argument")?.to_string();
    let req = AuthUserDeleteRequest { name: name.clone() };
    let r = call(p, |c, mut a| async move {
        c.call(a.user_delete(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        format!("User {name} deleted\n"),
    ))
}

fn user_get(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "user get command requires user name as its argument")?.to_string();
    let detail = p.bool("detail");
    let req = AuthUserGetRequest { name: name.clone() };
    let (r, roles) = call(p, |c, mut a| async move {
        let r = c.call(a.user_get(c.request(req))).await?;
        let mut roles = Vec::new();
        if detail {
            for role in &r.roles {
                let g = c
                    .call(a.role_get(c.request(AuthRoleGetRequest { role: role.clone() })))
                    .await?;
                roles.push((role.clone(), g));
            }
        }
        Ok((r, roles))
    })?;
    if detail {
        let mut out = format!("User: {name}\n").into_bytes();
        for (role, g) in &roles {
            out.push(b'\n');
            match show_role(printer, role, g) {
                Printed::Out(b) => out.extend(b),
                unsupported => {
                    print::emit(&out);
                    return Ok(unsupported);
                }
            }
        }
        return Ok(Printed::Out(out));
    }
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = write!(o, "User: {name}\nRoles:");
            for role in &r.roles {
                let _ = write!(o, " {role}");
            }
            o.push('\n');
        },
        None,
        |j| {
            j.header(r.header.as_ref());
            j.strs("roles", &r.roles, true);
        },
    ))
}

fn user_list(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "user list command requires no arguments")?;
    let r = call(p, |c, mut a| async move {
        c.call(a.user_list(c.request(AuthUserListRequest {}))).await
    })?;
    Ok(printer.rpc(
        &r,
        |o| {
            for u in &r.users {
                let _ = writeln!(o, "{u}");
            }
        },
        None,
        |j| {
            j.header(r.header.as_ref());
            j.strs("users", &r.users, true);
        },
    ))
}

fn user_passwd(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "user passwd command requires user name as its argument")?.to_string();
    let password = if p.bool("interactive") {
        read_password_twice(&name)?
    } else {
        word_from_stdin()
    };
    let req = AuthUserChangePasswordRequest {
        name,
        password,
        hashed_password: String::new(),
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.user_change_password(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        "Password updated\n".into(),
    ))
}

fn user_grant_role(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let (user, role) = two_args(
        p,
        "user grant command requires user name and role name as its argument",
    )?;
    let line = format!("Role {role} is granted to user {user}\n");
    let req = AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.user_grant_role(c.request(req))).await
    })?;
    Ok(done(printer, r.header.as_ref(), &r, line))
}

fn user_revoke_role(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let (user, role) = two_args(
        p,
        "user revoke-role requires user name and role name as its argument",
    )?;
    let line = format!("Role {role} is revoked from user {user}\n");
    let req = AuthUserRevokeRoleRequest {
        name: user.into(),
        role: role.into(),
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.user_revoke_role(c.request(req))).await
    })?;
    Ok(done(printer, r.header.as_ref(), &r, line))
}

fn role_add(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "role add command requires role name as its argument")?.to_string();
    let req = AuthRoleAddRequest { name: name.clone() };
    let r = call(p, |c, mut a| async move {
        c.call(a.role_add(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        format!("Role {name} created\n"),
    ))
}

fn role_delete(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "role delete command requires role name as its argument")?.to_string();
    let req = AuthRoleDeleteRequest { role: name.clone() };
    let r = call(p, |c, mut a| async move {
        c.call(a.role_delete(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        format!("Role {name} deleted\n"),
    ))
}

fn role_get(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = one_arg(p, "role get command requires role name as its argument")?.to_string();
    let req = AuthRoleGetRequest { role: name.clone() };
    let r = call(p, |c, mut a| async move {
        c.call(a.role_get(c.request(req))).await
    })?;
    Ok(show_role(printer, &name, &r))
}

fn perm_type_name(t: i32) -> &'static str {
    permission::Type::try_from(t).map_or("UNKNOWN", |t| t.as_str_name())
}

/// etcdctl's role get output in every format.
fn show_role(printer: &Printer, role: &str, r: &AuthRoleGetResponse) -> Printed {
    let mut simple = format!("Role {role}\nKV Read:\n").into_bytes();
    let line = |o: &mut Vec<u8>, perm: &Permission| {
        if perm.range_end.is_empty() {
            o.push(b'\t');
            o.extend_from_slice(&perm.key);
            o.push(b'\n');
            return;
        }
        o.extend_from_slice(b"\t[");
        o.extend_from_slice(&perm.key);
        if perm.range_end == b"\0" {
            o.extend_from_slice(b", <open ended>");
        } else {
            o.extend_from_slice(b", ");
            o.extend_from_slice(&perm.range_end);
            o.push(b')');
        }
        if perm.range_end == prefix_end(&perm.key) {
            o.extend_from_slice(b" (prefix ");
            o.extend_from_slice(&perm.key);
            o.push(b')');
        }
        o.push(b'\n');
    };
    use permission::Type;
    for perm in &r.perm {
        if perm.perm_type == Type::Read as i32 || perm.perm_type == Type::Readwrite as i32 {
            line(&mut simple, perm);
        }
    }
    simple.extend_from_slice(b"KV Write:\n");
    for perm in &r.perm {
        if perm.perm_type == Type::Write as i32 || perm.perm_type == Type::Readwrite as i32 {
            line(&mut simple, perm);
        }
    }
    if printer.format == Format::Simple {
        // Keys are raw bytes here, not necessarily UTF-8.
        return Printed::Out(simple);
    }
    printer.rpc(
        r,
        |_| {},
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            for perm in &r.perm {
                let _ = writeln!(o, "\"PermType\" :  {}", perm_type_name(perm.perm_type));
                let _ = writeln!(o, "\"Key\" : {}", go_quote(&perm.key));
                let _ = writeln!(o, "\"RangeEnd\" : {}", go_quote(&perm.range_end));
            }
        }),
        |j: &mut Json| {
            j.header(r.header.as_ref());
            j.objects("perm", &r.perm, None, |j, perm| {
                j.num("permType", perm.perm_type);
                j.bytes("key", &perm.key);
                j.bytes("range_end", &perm.range_end);
            });
        },
    )
}

fn role_list(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "role list command requires no arguments")?;
    let r = call(p, |c, mut a| async move {
        c.call(a.role_list(c.request(AuthRoleListRequest {}))).await
    })?;
    Ok(printer.rpc(
        &r,
        |o| {
            for role in &r.roles {
                let _ = writeln!(o, "{role}");
            }
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            o.push_str("\"Roles\" :");
            for role in &r.roles {
                let _ = write!(o, " {}", go_quote(role.as_bytes()));
            }
            o.push('\n');
        }),
        |j| {
            j.header(r.header.as_ref());
            j.strs("roles", &r.roles, true);
        },
    ))
}

/// etcdctl's permRange: the key and range end of a permission from the arguments after the
/// role (and type) and `--prefix` / `--from-key`.
fn perm_range(p: &Parsed, args: &[String]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let (prefix, from_key) = (p.bool("prefix"), p.bool("from-key"));
    let exclusive = || Failure::bad_args("--from-key and --prefix flags are mutually exclusive");
    let key = &bytes(&args[0]);
    if key.is_empty() {
        if prefix && from_key {
            return Err(exclusive());
        }
        // The whole key space: ["\0", "\0") is open ended on the server.
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match args.get(1) {
        None if prefix && from_key => return Err(exclusive()),
        None if prefix => prefix_end(key),
        None if from_key => vec![0],
        None => Vec::new(),
        Some(_) if prefix => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --prefix flag",
            ));
        }
        Some(_) if from_key => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --from-key flag",
            ));
        }
        Some(e) => bytes(e),
    };
    Ok((key.to_vec(), end))
}

fn role_grant(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    if p.args.len() < 3 {
        return Err(Failure::bad_args(
            "role grant command requires role name, permission type, and key [endkey] as its argument",
        ));
    }
    let role = p.args[0].clone();
    let perm_type = match p.args[1].to_uppercase().as_str() {
        "READ" => permission::Type::Read,
        "WRITE" => permission::Type::Write,
        "READWRITE" => permission::Type::Readwrite,
        _ => {
            return Err(Failure::bad_args(format!(
                "invalid permission type: {}",
                p.args[1]
            )));
        }
    };
    let (key, range_end) = perm_range(p, &p.args[2..])?;
    let req = AuthRoleGrantPermissionRequest {
        name: role.clone(),
        perm: Some(Permission {
            perm_type: perm_type as i32,
            key,
            range_end,
        }),
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.role_grant_permission(c.request(req))).await
    })?;
    Ok(done(
        printer,
        r.header.as_ref(),
        &r,
        format!("Role {role} updated\n"),
    ))
}

fn role_revoke(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    if p.args.len() < 2 {
        return Err(Failure::bad_args(
            "role revoke-permission command requires role name and key [endkey] as its argument",
        ));
    }
    let role = p.args[0].clone();
    let (key, range_end) = perm_range(p, &p.args[1..])?;
    let shown = p.args[1].clone();
    let end_text = String::from_utf8_lossy(&range_end).into_owned();
    let line = if range_end.is_empty() {
        format!("Permission of key {shown} is revoked from role {role}\n")
    } else if range_end == b"\0" {
        format!("Permission of range [{shown}, <open ended> is revoked from role {role}\n")
    } else {
        format!("Permission of range [{shown}, {end_text}) is revoked from role {role}\n")
    };
    let req = AuthRoleRevokePermissionRequest {
        role: role.clone(),
        key,
        range_end,
    };
    let r = call(p, |c, mut a| async move {
        c.call(a.role_revoke_permission(c.request(req))).await
    })?;
    Ok(done(printer, r.header.as_ref(), &r, line))
}
