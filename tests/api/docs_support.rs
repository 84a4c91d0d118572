//! Comparing what the docs show with what the server sends (`docs_openapi`, `docs_readme`).

use serde_json::Value;

/// `shown` is what the server sent: the same members (objects), the same values (floats
/// within 1e-6 relative, as the docs round float32), arrays element by element, except
/// arrays of objects with a `name`, which the docs may show in part: each shown element
/// is the sent one of that name. An empty object `{}` in an array stands for any object
/// (README's `{...}`).
pub fn same(shown: &Value, sent: &Value, at: &str) -> Result<(), String> {
    match (shown, sent) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            if ka != kb && !a.is_empty() {
                return Err(format!("{at}: members {ka:?} shown, {kb:?} sent"));
            }
            for (k, v) in a {
                same(v, &b[k], &format!("{at}/{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b))
            if a.iter().all(|x| x.get("name").is_some()) && !a.is_empty() =>
        {
            for x in a {
                let y = b.iter().find(|y| y["name"] == x["name"]);
                let y = y.ok_or(format!("{at}: no `{}` sent", x["name"]))?;
                same(x, y, &format!("{at}/{}", x["name"]))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: {} items shown, {} sent", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .try_for_each(|(i, (x, y))| same(x, y, &format!("{at}/{i}")))
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            ((a - b).abs() <= 1e-6 * a.abs().max(b.abs()))
                .then_some(())
                .ok_or(format!("{at}: {a} shown, {b} sent"))
        }
        _ => (shown == sent)
            .then_some(())
            .ok_or(format!("{at}: {shown} shown, {sent} sent")),
    }
}

/// The same members with values of the same JSON types (for values that depend on the
/// configuration or the load).
pub fn same_shape(shown: &Value, sent: &Value, at: &str) -> Result<(), String> {
    match (shown, sent) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            if ka != kb {
                return Err(format!("{at}: members {ka:?} shown, {kb:?} sent"));
            }
            a.iter()
                .try_for_each(|(k, v)| same_shape(v, &b[k], &format!("{at}/{k}")))
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Array(_), Value::Array(_))
        | (Value::Null, Value::Null) => Ok(()),
        _ => Err(format!("{at}: {shown} shown, {sent} sent")),
    }
}
