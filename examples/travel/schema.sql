-- pgveil travel sample schema (PostgreSQL 15+).
--
-- A travel agency: travellers and their flight bookings.
-- Sensitive columns are `text` on purpose: once pgveil encrypts them they hold ciphertext
-- envelopes (`pgv1:...`), which do not fit in narrower types. date_of_birth is `text` for the
-- same reason (ISO 8601, e.g. 1990-03-07); pgveil's date mask shows the year only.
-- Which column is how sensitive is decided by examples/travel/policy.yaml.
--
-- Intended for a fresh database: `psql -v ON_ERROR_STOP=1 -f schema.sql`.

-- Travellers.
--   sensitive: name, passport_no (core), id_card (core), phone, email, date_of_birth
CREATE TABLE IF NOT EXISTS public.travellers (
    id             bigserial   PRIMARY KEY,
    name           text        NOT NULL,  -- sensitive: personal name
    passport_no    text,                  -- sensitive (core): NULL for domestic-only travellers
    id_card        text        NOT NULL,  -- sensitive (core): 18-digit 居民身份证号
    phone          text        NOT NULL,  -- sensitive: mobile number
    email          text,                  -- sensitive: e-mail address
    date_of_birth  text        NOT NULL,  -- sensitive: YYYY-MM-DD
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Bookings (one per flight segment sold).
--   sensitive: pnr (record locator: with a surname it opens the booking), card_number (core)
--   ticket_no is a 13-digit e-ticket number: it identifies the booking, classified general.
CREATE TABLE IF NOT EXISTS public.bookings (
    id            bigserial     PRIMARY KEY,
    traveller_id  bigint        NOT NULL REFERENCES public.travellers (id),
    pnr           text          NOT NULL,  -- sensitive: 6-character record locator
    ticket_no     text          NOT NULL,
    card_number   text,                    -- sensitive (core): payment card, NULL if paid otherwise
    amount        numeric(10,2) NOT NULL,
    origin        text          NOT NULL,  -- IATA airport code
    destination   text          NOT NULL,  -- IATA airport code
    departure     date          NOT NULL,
    created_at    timestamptz   NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS bookings_traveller_id_idx ON public.bookings (traveller_id);
CREATE INDEX IF NOT EXISTS bookings_pnr_idx ON public.bookings (pnr);
