--
-- PostgreSQL database dump
--

\restrict Oq98dcy1NyrcD4BDRn0YgmBj0QozLcBnv3tS7nfZjdgXt0vrCx8A97XutwhE4fX

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: tms; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE tms WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';


ALTER DATABASE tms OWNER TO postgres;

\unrestrict Oq98dcy1NyrcD4BDRn0YgmBj0QozLcBnv3tS7nfZjdgXt0vrCx8A97XutwhE4fX
\connect tms
\restrict Oq98dcy1NyrcD4BDRn0YgmBj0QozLcBnv3tS7nfZjdgXt0vrCx8A97XutwhE4fX

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: crm; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA crm;


ALTER SCHEMA crm OWNER TO postgres;

--
-- Name: customer_phone(integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.customer_phone(i integer) RETURNS text
    LANGUAGE sql
    AS $$
SELECT phone FROM customers WHERE id = i; -- a ; inside a body
$$;


ALTER FUNCTION public.customer_phone(i integer) OWNER TO postgres;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: Contacts; Type: TABLE; Schema: crm; Owner: postgres
--

CREATE TABLE crm."Contacts" (
    id integer NOT NULL,
    "Note" text,
    phone text
);


ALTER TABLE crm."Contacts" OWNER TO postgres;

--
-- Name: Contacts_id_seq; Type: SEQUENCE; Schema: crm; Owner: postgres
--

CREATE SEQUENCE crm."Contacts_id_seq"
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE crm."Contacts_id_seq" OWNER TO postgres;

--
-- Name: Contacts_id_seq; Type: SEQUENCE OWNED BY; Schema: crm; Owner: postgres
--

ALTER SEQUENCE crm."Contacts_id_seq" OWNED BY crm."Contacts".id;


--
-- Name: customers; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.customers (
    id integer NOT NULL,
    name character varying(20) NOT NULL,
    id_card character(18),
    phone text,
    email text,
    address text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.customers OWNER TO postgres;

--
-- Name: TABLE customers; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.customers IS 'people; who send parcels';


--
-- Name: COLUMN customers.phone; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.customers.phone IS 'mobile; CN';


--
-- Name: customer_contacts; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.customer_contacts AS
 SELECT c.id,
    c.name,
    c.phone AS mobile,
    upper(c.email) AS email_upper
   FROM public.customers c;


ALTER TABLE public.customer_contacts OWNER TO postgres;

--
-- Name: customers_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.customers_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.customers_id_seq OWNER TO postgres;

--
-- Name: customers_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.customers_id_seq OWNED BY public.customers.id;


--
-- Name: events; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.events (
    id bigint,
    at date NOT NULL,
    note text
)
PARTITION BY RANGE (at);


ALTER TABLE public.events OWNER TO postgres;

--
-- Name: events_2024; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.events_2024 (
    id bigint,
    at date NOT NULL,
    note text
);


ALTER TABLE public.events_2024 OWNER TO postgres;

--
-- Name: shipments; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.shipments (
    id bigint NOT NULL,
    customer_id integer NOT NULL,
    status text DEFAULT 'new;'::text,
    weight numeric(10,2)
);


ALTER TABLE public.shipments OWNER TO postgres;

--
-- Name: shipment_counts; Type: MATERIALIZED VIEW; Schema: public; Owner: postgres
--

CREATE MATERIALIZED VIEW public.shipment_counts AS
 SELECT shipments.customer_id,
    count(*) AS n
   FROM public.shipments
  GROUP BY shipments.customer_id
  WITH NO DATA;


ALTER TABLE public.shipment_counts OWNER TO postgres;

--
-- Name: shipments_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.shipments_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.shipments_id_seq OWNER TO postgres;

--
-- Name: shipments_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.shipments_id_seq OWNED BY public.shipments.id;


--
-- Name: waybills; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.waybills (
    id integer NOT NULL,
    shipment_id bigint,
    consignee_name text,
    consignee_phone character varying(11)
);


ALTER TABLE public.waybills OWNER TO postgres;

--
-- Name: waybills_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

ALTER TABLE public.waybills ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.waybills_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: events_2024; Type: TABLE ATTACH; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');


--
-- Name: Contacts id; Type: DEFAULT; Schema: crm; Owner: postgres
--

ALTER TABLE ONLY crm."Contacts" ALTER COLUMN id SET DEFAULT nextval('crm."Contacts_id_seq"'::regclass);


--
-- Name: customers id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.customers ALTER COLUMN id SET DEFAULT nextval('public.customers_id_seq'::regclass);


--
-- Name: shipments id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.shipments ALTER COLUMN id SET DEFAULT nextval('public.shipments_id_seq'::regclass);


--
-- Name: customers customers_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);


--
-- Name: shipments shipments_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.shipments
    ADD CONSTRAINT shipments_pkey PRIMARY KEY (id);


--
-- Name: waybills waybills_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.waybills
    ADD CONSTRAINT waybills_pkey PRIMARY KEY (id);


--
-- Name: customers_phone_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX customers_phone_idx ON public.customers USING btree (phone);


--
-- Name: shipments shipments_customer_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.shipments
    ADD CONSTRAINT shipments_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(id);


--
-- Name: waybills waybills_shipment_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.waybills
    ADD CONSTRAINT waybills_shipment_id_fkey FOREIGN KEY (shipment_id) REFERENCES public.shipments(id);


--
-- PostgreSQL database dump complete
--

\unrestrict Oq98dcy1NyrcD4BDRn0YgmBj0QozLcBnv3tS7nfZjdgXt0vrCx8A97XutwhE4fX

