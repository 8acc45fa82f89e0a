//! The model methods the simulator exposes, bound like Python binds a call (positional
//! arguments, then keywords; `TypeError` on an unknown or missing one), and run as one
//! transaction: on a copy of the database's data that replaces it only on success.

use super::domain;
use super::model::{Model, OdooError, py_repr};
use super::orm::{DatabaseData, Env, Orm, known_model};
use chrono::Utc;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    XmlRpc,
    Json2,
}

/// One call of `model.method`, as either protocol carries it.
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodCall {
    pub model: String,
    pub method: String,
    /// XML-RPC: record methods take their ids as the first positional argument. JSON-2:
    /// the body's `ids`.
    pub ids: Option<Value>,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
}

struct Signature {
    /// Whether the method runs on records (`ids`) rather than on the model.
    on_records: bool,
    params: &'static [(&'static str, bool)],
}

fn signature(method: &str) -> Option<Signature> {
    let (on_records, params): (bool, &'static [(&'static str, bool)]) = match method {
        "create" => (false, &[("vals_list", true)]),
        "write" => (true, &[("vals", true)]),
        "read" => (true, &[("fields", false), ("load", false)]),
        "unlink" | "action_confirm" | "action_post" => (true, &[]),
        "search" => (
            false,
            &[
                ("domain", true),
                ("offset", false),
                ("limit", false),
                ("order", false),
            ],
        ),
        "search_read" => (
            false,
            &[
                ("domain", false),
                ("fields", false),
                ("offset", false),
                ("limit", false),
                ("order", false),
            ],
        ),
        "search_count" => (false, &[("domain", true), ("limit", false)]),
        "fields_get" => (false, &[("allfields", false), ("attributes", false)]),
        _ => return None,
    };
    Some(Signature { on_records, params })
}

/// Python's binding of a call to `name(self, *params)`.
fn bind(
    name: &str,
    params: &[(&str, bool)],
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Vec<Option<Value>>, OdooError> {
    if args.len() > params.len() {
        return Err(OdooError::type_error(format!(
            "{name}() takes {} positional arguments but {} were given",
            params.len() + 1,
            args.len() + 1
        )));
    }
    if let Some(unknown) = kwargs.keys().find(|k| !params.iter().any(|(p, _)| p == k)) {
        return Err(OdooError::type_error(format!(
            "{name}() got an unexpected keyword argument '{unknown}'"
        )));
    }
    let mut bound = Vec::with_capacity(params.len());
    for (index, (param, required)) in params.iter().enumerate() {
        let value = match (args.get(index), kwargs.get(*param)) {
            (Some(_), Some(_)) => {
                return Err(OdooError::type_error(format!(
                    "{name}() got multiple values for argument '{param}'"
                )));
            }
            (Some(v), None) | (None, Some(v)) => Some(v.clone()),
            (None, None) if *required => {
                return Err(OdooError::type_error(format!(
                    "{name}() missing 1 required positional argument: '{param}'"
                )));
            }
            (None, None) => None,
        };
        bound.push(value);
    }
    Ok(bound)
}

fn ids_of(value: Option<&Value>) -> Result<Vec<i64>, OdooError> {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => Ok(Vec::new()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|id| vec![id])
            .ok_or_else(|| OdooError::value(format!("Invalid id {n}"))),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_i64()
                    .ok_or_else(|| OdooError::value(format!("Invalid id {} in ids", py_repr(item))))
            })
            .collect(),
        Some(other) => Err(OdooError::type_error(format!(
            "ids must be a list of integers, not {}",
            py_repr(other)
        ))),
    }
}

fn unknown_model(protocol: Protocol, model: &str) -> OdooError {
    match protocol {
        Protocol::XmlRpc => OdooError::UserError(format!("Object {model} doesn't exist")),
        Protocol::Json2 => OdooError::NotFound(format!("the model '{model}' does not exist")),
    }
}

fn unknown_method(protocol: Protocol, model: &str, method: &str) -> OdooError {
    match protocol {
        Protocol::XmlRpc => OdooError::Application {
            class: "builtins.AttributeError",
            message: format!("type object '{model}' has no attribute '{method}'"),
        },
        Protocol::Json2 => OdooError::NotFound(format!(
            "the method '{method}' does not exist on model '{model}'"
        )),
    }
}

/// Runs one call as a transaction: the data changes only if it succeeds.
pub(crate) fn execute(
    data: &mut DatabaseData,
    env: &Env,
    protocol: Protocol,
    mut call: MethodCall,
) -> Result<Value, OdooError> {
    if call.method.starts_with('_') {
        return Err(OdooError::AccessError(format!(
            "Private methods (such as {}.{}) cannot be called remotely.",
            call.model, call.method
        )));
    }
    if call.model == "res.users" {
        return match call.method.as_str() {
            "context_get" => Ok(json!({"lang": "en_US", "tz": "UTC", "uid": env.uid})),
            _ => Err(unknown_method(protocol, &call.model, &call.method)),
        };
    }
    let model =
        known_model(&call.model, env.version).map_err(|_| unknown_model(protocol, &call.model))?;
    let sig = signature(&call.method)
        .filter(|_| match call.method.as_str() {
            "action_confirm" => model.name == "sale.order",
            "action_post" => model.name == "account.move",
            _ => true,
        })
        .ok_or_else(|| unknown_method(protocol, &call.model, &call.method))?;
    let ids = match (sig.on_records, protocol) {
        (true, Protocol::XmlRpc) if !call.args.is_empty() => ids_of(Some(&call.args.remove(0)))?,
        (true, Protocol::XmlRpc) => {
            return Err(OdooError::value(format!(
                "{}() requires the ids of the records as first argument",
                call.method
            )));
        }
        (true, Protocol::Json2) => ids_of(call.ids.as_ref())?,
        (false, _) => Vec::new(),
    };
    let args = bind(&call.method, sig.params, &call.args, &call.kwargs)?;
    if call.method == "create" {
        data.create_calls += 1;
        if args
            .first()
            .and_then(|v| v.as_ref())
            .and_then(Value::as_array)
            .is_some_and(|l| l.len() > 1)
        {
            data.batch_creates += 1;
        }
    }
    let mut copy = data.clone();
    let mut orm = Orm {
        data: &mut copy,
        env,
        now: Utc::now(),
    };
    let result = run(&mut orm, &model, &call.method, &ids, &args, protocol)?;
    *data = copy;
    Ok(result)
}

fn arg(args: &[Option<Value>], index: usize) -> Option<&Value> {
    args.get(index).and_then(Option::as_ref)
}

fn fields_arg(value: Option<&Value>) -> Result<Vec<String>, OdooError> {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| OdooError::value(format!("Invalid field {}", py_repr(f))))
            })
            .collect(),
        Some(other) => Err(OdooError::type_error(format!(
            "fields must be a list of field names, not {}",
            py_repr(other)
        ))),
    }
}

fn count_arg(value: Option<&Value>, name: &str) -> Result<Option<usize>, OdooError> {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| usize::try_from(n).ok())
            .ok_or_else(|| OdooError::value(format!("Invalid {name} {n}"))),
        Some(other) => Err(OdooError::type_error(format!(
            "{name} must be an integer, not {}",
            py_repr(other)
        ))),
    }
}

fn search_ids(
    orm: &Orm<'_>,
    model: &Model,
    args: &[Option<Value>],
    at: [usize; 4],
) -> Result<Vec<i64>, OdooError> {
    let [domain_at, offset_at, limit_at, order_at] = at;
    let expr = domain::parse(arg(args, domain_at), model)?;
    let order = domain::parse_order(arg(args, order_at), model)?;
    let offset = count_arg(arg(args, offset_at), "offset")?.unwrap_or(0);
    // `limit=0` means no limit in Odoo, as `None` does.
    let limit = count_arg(arg(args, limit_at), "limit")?.filter(|l| *l > 0);
    let ids = orm.search(model, &expr, &order);
    Ok(ids
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect())
}

fn run(
    orm: &mut Orm<'_>,
    model: &Model,
    method: &str,
    ids: &[i64],
    args: &[Option<Value>],
    protocol: Protocol,
) -> Result<Value, OdooError> {
    match method {
        "create" => match arg(args, 0) {
            Some(Value::Array(list)) => {
                let created = list
                    .iter()
                    .map(|vals| orm.create(model, vals, None))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!(created))
            }
            Some(vals) => {
                let id = orm.create(model, vals, None)?;
                Ok(if protocol == Protocol::Json2 {
                    json!([id])
                } else {
                    json!(id)
                })
            }
            None => Err(OdooError::type_error(
                "create() missing 1 required positional argument: 'vals_list'",
            )),
        },
        "write" => {
            orm.write(model, ids, arg(args, 0).unwrap_or(&Value::Null))?;
            Ok(json!(true))
        }
        "unlink" => {
            orm.unlink(model, ids)?;
            Ok(json!(true))
        }
        "action_confirm" => {
            orm.ensure_exist(model, ids)?;
            orm.write(model, ids, &json!({"state": "sale"}))?;
            Ok(json!(true))
        }
        "action_post" => post(orm, model, ids),
        "read" => Ok(json!(orm.read(model, ids, &fields_arg(arg(args, 0))?)?)),
        "search" => Ok(json!(search_ids(orm, model, args, [0, 1, 2, 3])?)),
        "search_count" => {
            let expr = domain::parse(arg(args, 0), model)?;
            let found = orm.search(model, &expr, &[]).len();
            let limit = count_arg(arg(args, 1), "limit")?.filter(|l| *l > 0);
            Ok(json!(limit.map_or(found, |l| found.min(l))))
        }
        "search_read" => {
            let fields = fields_arg(arg(args, 1))?;
            let found = search_ids(orm, model, args, [0, 2, 3, 4])?;
            Ok(json!(orm.read(model, &found, &fields)?))
        }
        "fields_get" => Ok(fields_get(model)),
        _ => Err(unknown_method(protocol, model.name, method)),
    }
}

/// `action_post`: numbers the draft moves (`INV/2025/00001`) and posts them.
fn post(orm: &mut Orm<'_>, model: &Model, ids: &[i64]) -> Result<Value, OdooError> {
    orm.ensure_exist(model, ids)?;
    for &id in ids {
        let view = orm.view(model, id);
        let prefix = match view.get("move_type").and_then(Value::as_str) {
            Some("out_invoice") => "INV",
            Some("out_refund") => "RINV",
            Some("in_invoice") => "BILL",
            Some("in_refund") => "RBILL",
            _ => "MISC",
        };
        orm.data.move_sequence += 1;
        let name = format!(
            "{prefix}/{}/{:05}",
            orm.now.format("%Y"),
            orm.data.move_sequence
        );
        orm.write(model, &[id], &json!({"state": "posted", "name": name}))?;
    }
    Ok(json!(true))
}

fn fields_get(model: &Model) -> Value {
    use super::model::FieldKind;
    let fields: Map<String, Value> = model
        .fields
        .iter()
        .map(|f| {
            let (kind, relation) = match f.kind {
                FieldKind::Char => ("char", None),
                FieldKind::Int => ("integer", None),
                FieldKind::Float => ("float", None),
                FieldKind::Bool => ("boolean", None),
                FieldKind::Selection(_) => ("selection", None),
                FieldKind::Many2one(c) => ("many2one", Some(c)),
                FieldKind::One2many { comodel, .. } => ("one2many", Some(comodel)),
                FieldKind::Date => ("date", None),
                FieldKind::Datetime => ("datetime", None),
            };
            let mut attrs = json!({"type": kind, "string": f.label, "required": f.required,
                "readonly": f.computed});
            if let (Some(relation), Value::Object(map)) = (relation, &mut attrs) {
                map.insert("relation".into(), json!(relation));
            }
            (f.name.to_owned(), attrs)
        })
        .collect();
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env() -> Env {
        Env {
            version: 17,
            check_vat: false,
            uid: 2,
            active_test: true,
            counted: true,
        }
    }

    fn call(model: &str, method: &str, args: Value) -> MethodCall {
        MethodCall {
            model: model.into(),
            method: method.into(),
            ids: None,
            args: args.as_array().unwrap().clone(),
            kwargs: Map::new(),
        }
    }

    #[test]
    fn a_batch_with_one_bad_record_creates_nothing() {
        let mut data = DatabaseData::seeded();
        let batch = call(
            "res.partner",
            "create",
            json!([[{"name": "A"}, {"email": "b@x"}]]),
        );
        let error = execute(&mut data, &env(), Protocol::XmlRpc, batch).unwrap_err();
        assert!(matches!(error, OdooError::ValidationError(_)));
        assert_eq!(data.len("res.partner"), 0);
        assert_eq!(data.create_calls, 1);
        assert_eq!(data.batch_creates, 1);
    }

    #[test]
    fn binding_follows_python() {
        let mut data = DatabaseData::seeded();
        let mut bad = call("res.partner", "search_read", json!([[]]));
        bad.kwargs.insert("foo".into(), json!(1));
        let error = execute(&mut data, &env(), Protocol::Json2, bad).unwrap_err();
        assert_eq!(
            error.message(),
            "search_read() got an unexpected keyword argument 'foo'"
        );
        let missing = call("res.partner", "create", json!([]));
        let error = execute(&mut data, &env(), Protocol::XmlRpc, missing).unwrap_err();
        assert_eq!(error.class(), "builtins.TypeError");
    }

    #[test]
    fn order_lines_take_the_product_defaults_and_sum_up() {
        let mut data = DatabaseData::seeded();
        let run = |data: &mut DatabaseData, c| execute(data, &env(), Protocol::XmlRpc, c).unwrap();
        let product = run(
            &mut data,
            call(
                "product.product",
                "create",
                json!([{"name": "Widget", "list_price": 2.5, "default_code": "W1"}]),
            ),
        );
        let partner = run(
            &mut data,
            call("res.partner", "create", json!([{"name": "Acme"}])),
        );
        let order = run(
            &mut data,
            call(
                "sale.order",
                "create",
                json!([{"partner_id": partner,
            "order_line": [[0, 0, {"product_id": product, "product_uom_qty": 4}]]}]),
            ),
        );
        let read = run(
            &mut data,
            call(
                "sale.order",
                "read",
                json!([
                    [order],
                    ["name", "amount_total", "order_line", "partner_id"]
                ]),
            ),
        );
        assert_eq!(read[0]["name"], "S00001");
        assert_eq!(read[0]["amount_total"], 10.0);
        assert_eq!(read[0]["partner_id"], json!([partner, "Acme"]));
        let line = read[0]["order_line"][0].clone();
        let lines = run(
            &mut data,
            call(
                "sale.order.line",
                "read",
                json!([[line], ["name", "product_id"]]),
            ),
        );
        assert_eq!(lines[0]["name"], "Widget");
        assert_eq!(lines[0]["product_id"], json!([product, "[W1] Widget"]));
        run(
            &mut data,
            call(
                "sale.order",
                "write",
                json!([[order], {"order_line": [[5, 0, 0]]}]),
            ),
        );
        assert_eq!(data.len("sale.order.line"), 0);
    }
}
