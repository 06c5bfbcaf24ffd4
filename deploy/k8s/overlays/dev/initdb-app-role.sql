-- Dev only: the role the services connect as (DML only; headshots-setup grants it the rest).
CREATE ROLE headshots_app LOGIN PASSWORD 'dev-only-app-password';
