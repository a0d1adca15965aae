-- pgveil logistics sample schema (PostgreSQL 15+).
--
-- A small courier company: customers place shipments, each shipment gets a waybill.
-- Sensitive columns are declared as `text` on purpose: once pgveil encrypts them they hold
-- ciphertext envelopes, which would not fit in narrower types (char(18), varchar(11), ...).
-- Which column is how sensitive is decided by examples/logistics/policy.yaml; the comments
-- below only say which columns carry personal information.
--
-- Intended for a fresh database: `psql -v ON_ERROR_STOP=1 -f schema.sql`.
-- `IF NOT EXISTS` makes a re-run harmless but does not migrate an older layout.

-- Customers who send parcels.
--   sensitive: name, id_card (18-digit 居民身份证号), phone (CN mobile), email, address
CREATE TABLE IF NOT EXISTS public.customers (
    id          bigserial   PRIMARY KEY,
    name        text,                  -- sensitive: personal name
    id_card     text,                  -- sensitive: national ID number (core)
    phone       text,                  -- sensitive: mobile number
    email       text,                  -- sensitive: e-mail address
    address     text,                  -- sensitive: home address down to room number
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Customer service finds customers by phone number; pgveil rewrites the lookup to the
-- deterministic ciphertext, so this index keeps working once the column is encrypted.
CREATE INDEX IF NOT EXISTS customers_phone_idx ON public.customers (phone);

-- Shipments: what goes where. No direct identifiers; joins to customers.
--   sensitive: none (origin/destination are city-level only)
CREATE TABLE IF NOT EXISTS public.shipments (
    id                bigserial    PRIMARY KEY,
    customer_id       bigint       NOT NULL REFERENCES public.customers (id),
    origin_city       text         NOT NULL,
    destination_city  text         NOT NULL,
    weight_kg         numeric(8,2) NOT NULL,
    status            text         NOT NULL,  -- created | picked_up | in_transit | delivered | returned
    created_at        timestamptz  NOT NULL
);

CREATE INDEX IF NOT EXISTS shipments_customer_id_idx ON public.shipments (customer_id);

-- Waybills (运单): the printed label. One per shipment.
--   sensitive: sender_name, sender_phone, sender_address,
--              consignee_name, consignee_phone, consignee_address, consignee_id_card (core),
--              driver_name, driver_phone
--   waybill_no itself is not personal data, but it joins to everything above
--   (the 隐私面单 "privacy waybill" practice masks consignee phone and address).
CREATE TABLE IF NOT EXISTS public.waybills (
    waybill_no         text        PRIMARY KEY,  -- SF + 13 digits (domestic) or UPU S10 (international)
    shipment_id        bigint      NOT NULL REFERENCES public.shipments (id),
    sender_name        text,       -- sensitive
    sender_phone       text,       -- sensitive
    sender_address     text,       -- sensitive
    consignee_name     text,       -- sensitive
    consignee_phone    text,       -- sensitive
    consignee_address  text,       -- sensitive
    consignee_id_card  text,       -- sensitive (core): real-name delivery check, often NULL
    driver_name        text,       -- sensitive
    driver_phone       text,       -- sensitive
    created_at         timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS waybills_shipment_id_idx ON public.waybills (shipment_id);
