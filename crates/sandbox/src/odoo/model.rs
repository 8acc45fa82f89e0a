//! The models the Odoo simulator hosts, their fields (with Odoo's human labels, used in its
//! error messages) and the errors the ORM raises, as Odoo's exception classes.

/// What a field holds, as Odoo's field classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Char,
    Int,
    Float,
    Bool,
    Selection(&'static [&'static str]),
    Many2one(&'static str),
    /// Lines owned by the record: `inverse` is the line's many2one back to it.
    One2many {
        comodel: &'static str,
        inverse: &'static str,
    },
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    Datetime,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: FieldKind,
    pub required: bool,
    /// Computed by the server (or a magic field): read-only, writing it is a UserError.
    pub computed: bool,
}

const fn f(name: &'static str, label: &'static str, kind: FieldKind) -> Field {
    Field {
        name,
        label,
        kind,
        required: false,
        computed: false,
    }
}

const fn required(mut field: Field) -> Field {
    field.required = true;
    field
}

const fn computed(mut field: Field) -> Field {
    field.computed = true;
    field
}

#[derive(Clone, Debug)]
pub(crate) struct Model {
    pub name: &'static str,
    /// `_description`, as Odoo names the model in its messages.
    pub label: &'static str,
    pub fields: Vec<Field>,
    /// Lines of another model, created and deleted through it.
    pub owner: Option<&'static str>,
}

impl Model {
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn has_active(&self) -> bool {
        self.field("active").is_some()
    }
}

/// The models an integration syncs, whose creates the stats always list.
pub(crate) const SYNCED: [&str; 4] = [
    "product.product",
    "res.partner",
    "sale.order",
    "account.move",
];

/// Every model hosted, in the order the stats list them.
pub(crate) const MODELS: [&str; 8] = [
    "product.product",
    "res.partner",
    "sale.order",
    "sale.order.line",
    "account.move",
    "account.move.line",
    "stock.location",
    "stock.quant",
];

/// Our reference field per synced model: `creates_by_reference` and `duplicate_references`
/// are keyed by it.
pub(crate) fn reference_field(model: &str) -> Option<&'static str> {
    match model {
        "product.product" => Some("default_code"),
        "res.partner" => Some("ref"),
        "sale.order" => Some("client_order_ref"),
        "account.move" => Some("ref"),
        _ => None,
    }
}

use FieldKind::{Bool, Char, Date, Datetime, Float, Int, Many2one, One2many, Selection};

fn magic() -> [Field; 4] {
    [
        computed(f("id", "ID", Int)),
        computed(f("display_name", "Display Name", Char)),
        computed(f("create_date", "Created on", Datetime)),
        computed(f("write_date", "Last Updated on", Datetime)),
    ]
}

fn with_magic(label: &'static str, name: &'static str, fields: Vec<Field>) -> Model {
    let mut all = magic().to_vec();
    all.extend(fields);
    Model {
        name,
        label,
        fields: all,
        owner: None,
    }
}

/// The model as the given major version of Odoo defines it.
pub(crate) fn model(name: &str, version: u32) -> Option<Model> {
    let model = match name {
        "product.product" => product(version),
        "res.partner" => res_partner(),
        "sale.order" => sale_order(),
        "sale.order.line" => sale_order_line(),
        "account.move" => account_move(),
        "account.move.line" => account_move_line(),
        "stock.location" => stock_location(),
        "stock.quant" => stock_quant(),
        _ => return None,
    };
    Some(model)
}

fn res_partner() -> Model {
    with_magic(
        "Contact",
        "res.partner",
        vec![
            required(f("name", "Name", Char)),
            f("email", "Email", Char),
            f("phone", "Phone", Char),
            f("vat", "Tax ID", Char),
            f("ref", "Reference", Char),
            f("company_name", "Company Name", Char),
            f("is_company", "Is a Company", Bool),
            f("customer_rank", "Customer Rank", Int),
            f("street", "Street", Char),
            f("city", "City", Char),
            f("zip", "Zip", Char),
            f("active", "Active", Bool),
        ],
    )
}

fn sale_order() -> Model {
    with_magic(
        "Sales Order",
        "sale.order",
        vec![
            f("name", "Order Reference", Char),
            required(f("partner_id", "Customer", Many2one("res.partner"))),
            f("client_order_ref", "Customer Reference", Char),
            f("date_order", "Order Date", Datetime),
            f(
                "order_line",
                "Order Lines",
                One2many {
                    comodel: "sale.order.line",
                    inverse: "order_id",
                },
            ),
            f(
                "state",
                "Status",
                Selection(&["draft", "sent", "sale", "cancel"]),
            ),
            computed(f("amount_total", "Total", Float)),
        ],
    )
}

fn sale_order_line() -> Model {
    owned(
        with_magic(
            "Sales Order Line",
            "sale.order.line",
            vec![
                required(f("order_id", "Order Reference", Many2one("sale.order"))),
                required(f("product_id", "Product", Many2one("product.product"))),
                f("name", "Description", Char),
                f("product_uom_qty", "Quantity", Float),
                f("price_unit", "Unit Price", Float),
                computed(f("price_subtotal", "Subtotal", Float)),
            ],
        ),
        "sale.order",
    )
}

fn account_move() -> Model {
    with_magic(
        "Journal Entry",
        "account.move",
        vec![
            f("name", "Number", Char),
            f(
                "move_type",
                "Type",
                Selection(&[
                    "entry",
                    "out_invoice",
                    "out_refund",
                    "in_invoice",
                    "in_refund",
                ]),
            ),
            f("partner_id", "Partner", Many2one("res.partner")),
            f("ref", "Reference", Char),
            f("invoice_date", "Invoice/Bill Date", Date),
            f("invoice_date_due", "Due Date", Date),
            f(
                "invoice_line_ids",
                "Invoice lines",
                One2many {
                    comodel: "account.move.line",
                    inverse: "move_id",
                },
            ),
            f("state", "Status", Selection(&["draft", "posted", "cancel"])),
            computed(f("amount_total", "Total", Float)),
        ],
    )
}

fn account_move_line() -> Model {
    owned(
        with_magic(
            "Journal Item",
            "account.move.line",
            vec![
                required(f("move_id", "Journal Entry", Many2one("account.move"))),
                f("name", "Label", Char),
                f("quantity", "Quantity", Float),
                f("price_unit", "Unit Price", Float),
                f("product_id", "Product", Many2one("product.product")),
                computed(f("price_subtotal", "Subtotal", Float)),
            ],
        ),
        "account.move",
    )
}

fn stock_location() -> Model {
    with_magic(
        "Inventory Locations",
        "stock.location",
        vec![
            required(f("name", "Location Name", Char)),
            f("complete_name", "Full Location Name", Char),
            f(
                "usage",
                "Location Type",
                Selection(&[
                    "supplier",
                    "view",
                    "internal",
                    "customer",
                    "inventory",
                    "production",
                    "transit",
                ]),
            ),
            f("active", "Active", Bool),
        ],
    )
}

fn stock_quant() -> Model {
    with_magic(
        "Quants",
        "stock.quant",
        vec![
            required(f("product_id", "Product", Many2one("product.product"))),
            required(f("location_id", "Location", Many2one("stock.location"))),
            f("quantity", "Quantity", Float),
            f("reserved_quantity", "Reserved Quantity", Float),
        ],
    )
}

fn owned(mut model: Model, owner: &'static str) -> Model {
    model.owner = Some(owner);
    model
}

fn product(version: u32) -> Model {
    let types: &'static [&'static str] = if version >= 18 {
        &["consu", "service", "combo"]
    } else {
        &["consu", "service", "product"]
    };
    let mut fields = vec![
        required(f("name", "Name", Char)),
        f("default_code", "Internal Reference", Char),
        f("barcode", "Barcode", Char),
        f("list_price", "Sales Price", Float),
        f("standard_price", "Cost", Float),
        f("description_sale", "Sales Description", Char),
        f("type", "Product Type", Selection(types)),
        f("active", "Active", Bool),
        computed(f(
            "product_tmpl_id",
            "Product Template",
            Many2one("product.template"),
        )),
        computed(f("qty_available", "Quantity On Hand", Float)),
    ];
    if version >= 18 {
        fields.push(f("is_storable", "Track Inventory", Bool));
    }
    with_magic("Product Variant", "product.product", fields)
}

/// An exception the server raises, as the Odoo (or Python) class it would be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OdooError {
    /// Any other exception: XML-RPC fault 1 with a traceback, JSON-2 500. `class` is the
    /// qualified Python class (`builtins.ValueError`).
    Application {
        class: &'static str,
        message: String,
    },
    UserError(String),
    ValidationError(String),
    MissingError(String),
    AccessDenied,
    AccessError(String),
    /// JSON-2's 404 for an unknown model or method (werkzeug's NotFound).
    NotFound(String),
}

impl OdooError {
    pub(crate) fn value(message: impl Into<String>) -> Self {
        Self::Application {
            class: "builtins.ValueError",
            message: message.into(),
        }
    }

    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        Self::Application {
            class: "builtins.TypeError",
            message: message.into(),
        }
    }

    pub(crate) fn invalid_field(field: &str, model: &str) -> Self {
        Self::value(format!("Invalid field '{field}' on model '{model}'"))
    }

    pub(crate) fn missing(model: &str, ids: &[i64], uid: i64) -> Self {
        let ids: String = ids.iter().map(|id| format!("{id},")).collect();
        Self::MissingError(format!(
            "Record does not exist or has been deleted.\n(Record: {model}({ids}), User: {uid})"
        ))
    }

    pub(crate) fn mandatory(model: &Model, field: &Field) -> Self {
        Self::ValidationError(format!(
            "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n\
             - Delete: another model requires the record being deleted. If possible, archive it \
             instead.\n\nModel: {} ({})\nField: {} ({})",
            model.label, model.name, field.label, field.name
        ))
    }

    /// The qualified class name JSON-2 reports in `name`.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            Self::Application { class, .. } => class,
            Self::UserError(_) => "odoo.exceptions.UserError",
            Self::ValidationError(_) => "odoo.exceptions.ValidationError",
            Self::MissingError(_) => "odoo.exceptions.MissingError",
            Self::AccessDenied => "odoo.exceptions.AccessDenied",
            Self::AccessError(_) => "odoo.exceptions.AccessError",
            Self::NotFound(_) => "werkzeug.exceptions.NotFound",
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Application { message, .. }
            | Self::UserError(message)
            | Self::ValidationError(message)
            | Self::MissingError(message)
            | Self::AccessError(message)
            | Self::NotFound(message) => message,
            Self::AccessDenied => "Access Denied",
        }
    }

    /// The last line of the traceback: `ValueError: Invalid field …`.
    pub(crate) fn traceback(&self) -> String {
        let class = self.class();
        let short = class.strip_prefix("builtins.").unwrap_or(class);
        format!(
            "Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/odoo/\
             http.py\", line 2371, in __call__\n    response = request._serve_db()\n  File \
             \"/usr/lib/python3/dist-packages/odoo/service/model.py\", line 156, in \
             execute_cr\n    result = retrying(partial(odoo.api.call_kw, recs, method, args, \
             kw), env)\n{short}: {}\n",
            self.message()
        )
    }
}

/// Python's `repr` of a JSON value, for messages quoting what the client sent.
pub(crate) fn py_repr(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}
